"""The retrieval-quality benchmark's arithmetic (benchmarks/quality.py, benchmarks/bm25.py) on tiny
hand-made data: recall@k, evidence parsing, how a turn becomes a memory, BM25 and rank fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.bm25 import BM25, tokenize
from benchmarks.quality import (
    Question,
    Scores,
    agreement,
    parse_conversation,
    parse_evidence,
    recall_at,
    reciprocal_rank_fusion,
    turn_content,
)

TURNS = ("D1:1", "D1:2", "D8:6", "D9:17")


def test_recall_at_k_counts_the_evidence_found_in_the_first_k() -> None:
    ranked = ["D1:1", "D2:2", "D3:3", "D1:2", "D4:4"]
    assert recall_at(ranked, ["D1:1"], 1) == 1.0
    assert recall_at(ranked, ["D1:2"], 3) == 0.0
    assert recall_at(ranked, ["D1:2"], 4) == 1.0
    assert recall_at(ranked, ["D1:1", "D1:2", "D9:9"], 5) == pytest.approx(2 / 3)
    assert recall_at([], ["D1:1"], 10) == 0.0


def test_recall_of_a_question_without_evidence_is_refused() -> None:
    with pytest.raises(ValueError, match="without evidence"):
        recall_at(["D1:1"], [], 5)


def test_evidence_entries_holding_two_ids_are_split() -> None:
    assert parse_evidence(["D8:6; D9:17"], TURNS) == ("D8:6", "D9:17")
    assert parse_evidence(["D1:2", "D8:6;D9:17", "D1:2"], TURNS) == ("D1:2", "D8:6", "D9:17")


def test_evidence_that_names_no_turn_is_dropped() -> None:
    assert parse_evidence(["D30:5", "D1:1", "", "session 3", "D1"], TURNS) == ("D1:1",)
    assert parse_evidence([], TURNS) == ()


def test_a_turn_becomes_speaker_date_text_and_its_photo_caption() -> None:
    assert turn_content("Caroline", "1:56 pm on 8 May, 2023", "Hi!", None) == "Caroline (1:56 pm on 8 May, 2023): Hi!"
    assert (
        turn_content("Mel", "8 May, 2023", "Look.", "a photo of a dog")
        == "Mel (8 May, 2023): Look. [shares a photo: a photo of a dog]"
    )


def test_a_conversation_keeps_questions_of_categories_1_to_4_with_evidence() -> None:
    data = {
        "speaker_a": "Ann",
        "speaker_b": "Bob",
        "session_2_date_time": "9 May, 2023",
        "session_2": [{"speaker": "Bob", "dia_id": "D2:1", "text": "Later.", "blip_caption": "a cat"}],
        "session_1_date_time": "8 May, 2023",
        "session_1": [
            {"speaker": "Ann", "dia_id": "D1:1", "text": "Hello.", "img_url": ["x"], "query": "y"},
            {"speaker": "Bob", "dia_id": "D1:2", "text": "Hi."},
        ],
        "events_session_1": {"Ann": ["said hello"]},
        "qa": [
            {"question": "q1", "answer": "a", "evidence": ["D1:1; D2:1"], "category": 1},
            {"question": "q5", "answer": "a", "evidence": ["D1:2"], "category": 5},
            {"question": "q3", "answer": "a", "evidence": [], "category": 3},
            {"question": "q4", "answer": 2023, "evidence": ["D7:7", "D1:2"], "category": 4},
        ],
    }
    conversation = parse_conversation("t", data)
    assert [turn.dia_id for turn in conversation.turns] == ["D1:1", "D1:2", "D2:1"]  # sessions in order
    assert conversation.turns[2].content == "Bob (9 May, 2023): Later. [shares a photo: a cat]"
    assert conversation.questions == (Question("q1", 1, ("D1:1", "D2:1")), Question("q4", 4, ("D1:2",)))
    assert conversation.without_evidence == 1


def test_scores_average_per_category_and_overall() -> None:
    scores = Scores()
    scores.add(Question("a", 1, ("D1:1", "D1:2")), ["D1:1", "x", "x", "x", "x", "D1:2"])
    scores.add(Question("b", 4, ("D2:1",)), ["D2:1"])
    scores.add(Question("c", 4, ("D3:1",)), ["x"])
    assert scores.mean(5, 1) == 0.5
    assert scores.mean(10, 1) == 1.0
    assert scores.mean(5, 4) == 0.5
    assert scores.mean(5) == pytest.approx((0.5 + 1 + 0) / 3)
    assert math.isnan(scores.mean(5, 2))


def test_agreement_is_the_mean_share_of_our_top_in_the_reference_top() -> None:
    assert agreement([["a", "b"], ["c", "d"]], [["b", "a"], ["c", "x"]]) == 0.75


def test_tokens_are_lowercase_words() -> None:
    assert tokenize("Caroline (8 May, 2023): LGBTQ support-group!") == [
        "caroline",
        "8",
        "may",
        "2023",
        "lgbtq",
        "support",
        "group",
    ]


def test_bm25_scores_match_the_okapi_formula_by_hand() -> None:
    documents = ["the cat sat", "the dog sat on the mat", "a bird"]
    bm25 = BM25(documents, k1=1.5, b=0.75)
    average = (3 + 6 + 2) / 3

    def term(tf: int, df: int, length: int) -> float:
        idf = math.log(1 + (3 - df + 0.5) / (df + 0.5))
        return idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * length / average))

    scores = bm25.scores("The cat?")
    assert scores[0] == pytest.approx(term(1, 2, 3) + term(1, 1, 3))
    assert scores[1] == pytest.approx(term(2, 2, 6))
    assert scores[2] == 0.0
    assert bm25.rank("cat") == [0, 1, 2]
    assert bm25.rank("mat dog") == [1, 0, 2]


def test_bm25_prefers_the_rarer_term_and_the_shorter_document() -> None:
    bm25 = BM25(["apple pie", "apple tart", "apple banana", "apple banana bread with many more words"])
    scores = bm25.scores("apple banana")
    assert scores[2] > scores[3] > scores[0] > 0  # the rare term outweighs the common one; length costs
    assert np.all(bm25.scores("unknown term") == 0.0)
    assert BM25([]).scores("anything").shape == (0,)


def test_reciprocal_rank_fusion_sums_one_over_k_plus_rank() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 2, 1]], k=60)
    assert fused == [1, 3, 2]  # 1/61 + 1/63 edges out 2/62; 1 and 3 tie, in the order first met
    assert reciprocal_rank_fusion([[5, 6], [7]], k=1) == [5, 7, 6]  # 1/2, 1/2 (first met first), 1/3
