"""The lexical index: its words, BM25 under changes, and its serialization."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pai_core.search.lexical import LexicalIndex, tokenize

WORDS = [
    "garden",
    "bicycle",
    "ramen",
    "dentist",
    "piano",
    "birthday",
    "hiking",
    "violin",
    "passport",
    "lake",
    "coffee",
    "tennis",
]


def test_tokenize_folds_case_and_width_and_drops_stop_words() -> None:
    fullwidth_test = "\uff34\uff25\uff33\uff34"  # "TEST" in fullwidth letters
    assert tokenize(f"The CAFÉ on Main_Street, {fullwidth_test}!") == ["café", "main", "street", "test"]
    assert tokenize("Straße") == tokenize("STRASSE")  # Unicode case folding, not lower()


def test_tokenize_stems_english_and_keeps_other_scripts() -> None:
    assert tokenize("running dances") == tokenize("runs dancing")
    assert tokenize("Jon's studio") == ["jon", "studio"]  # the possessive's "s" is too short to be a word
    assert tokenize("東京 Москва 2023") == ["東京", "москва", "2023"]


def test_search_finds_the_item_with_the_rarer_word_first() -> None:
    index = LexicalIndex()
    index.add("a", "I walked to the lake with my dog")
    index.add("b", "my dog likes the park")
    index.add("c", "the dog sleeps")
    found = index.search("where is the lake with the dog?", 3)
    assert found[0][0] == "a"
    assert {key for key, _ in found} == {"a", "b", "c"}
    assert all(score > 0 for _, score in found)
    assert index.search("piano", 3) == []  # nothing holds the word
    assert index.search("the of and", 3) == []  # stop words only


def test_replace_and_remove_change_the_answer_at_once() -> None:
    index = LexicalIndex()
    index.add("a", "passport renewal in March")
    index.add("b", "coffee with Priya")
    index.add("a", "violin lesson on Tuesday")
    assert len(index) == 2
    assert index.search("passport", 5) == []
    assert [key for key, _ in index.search("violin", 5)] == ["a"]
    assert index.remove(["a", "missing"]) == 1
    assert "a" not in index and len(index) == 1
    assert index.search("violin", 5) == []
    assert index.score_keys("coffee", ["b", "a"]).tolist()[1] == 0.0


def _random_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))


def _all_scores(index: LexicalIndex, query: str) -> dict[str, float]:
    scores = index.scores(query)
    return {index.key_of(row): float(scores[row]) for row in range(index.rows) if index.key_of(row)}


def test_statistics_after_changes_equal_a_fresh_build() -> None:
    """Adds, replacements and removals (enough to compact) leave exactly the scores an index built
    from the surviving texts would give."""
    rng = random.Random(3)
    index = LexicalIndex()
    texts: dict[str, str] = {}
    for step in range(1500):
        key = f"k{rng.randrange(600)}"
        if rng.random() < 0.3 and texts:
            victim = rng.choice(sorted(texts))
            index.remove([victim])
            del texts[victim]
        else:
            texts[key] = _random_text(rng)
            index.add(key, texts[key], time=float(step))
    fresh = LexicalIndex()
    for key, text in texts.items():
        fresh.add(key, text)
    assert index.keys() == fresh.keys() == set(texts)
    for query in ("garden piano", "lake lake coffee", "violin tennis hiking dentist"):
        ours, theirs = _all_scores(index, query), _all_scores(fresh, query)
        assert ours.keys() == theirs.keys()
        assert all(ours[key] == pytest.approx(theirs[key], rel=1e-5) for key in ours)
        assert max(ours.values()) <= index.best_possible(query)


def test_serialization_round_trip_keeps_keys_scores_and_times() -> None:
    rng = random.Random(5)
    index = LexicalIndex(k1=1.1, b=0.5)
    for i in range(200):
        index.add(f"id-{i}-é", _random_text(rng), time=float(i * 1000))
    index.remove([f"id-{i}-é" for i in range(0, 200, 7)])
    index.add("unicode ✓", "Café in Zürich with Ωmega", time=5.5)
    restored = LexicalIndex.from_bytes(index.to_bytes())
    assert (restored.k1, restored.b) == (1.1, 0.5)
    assert restored.keys() == index.keys()
    for query in ("garden ramen", "zurich cafe", "omega"):
        ours, theirs = _all_scores(restored, query), _all_scores(index, query)
        assert ours.keys() == theirs.keys()
        assert all(ours[key] == pytest.approx(theirs[key], rel=1e-6) for key in ours)
    restored.add("later", "a new garden")  # the restored index takes changes like any other
    assert "later" in restored
    before, after = restored.neighbours(gap=1000.0)
    row = restored.row_of("id-2-é")
    assert row is not None
    assert restored.key_of(int(before[row])) == "id-1-é"
    assert restored.key_of(int(after[row])) == "id-3-é"


def test_from_bytes_refuses_what_is_not_an_index() -> None:
    with pytest.raises(ValueError, match="not a lexical index"):
        LexicalIndex.from_bytes(b"garbage")
    data = LexicalIndex().to_bytes()
    with pytest.raises(ValueError, match="not a lexical index"):
        LexicalIndex.from_bytes(data[: len(data) // 2])


def test_damaged_bytes_raise_value_error_and_nothing_else() -> None:
    """The snapshot's AEAD is what detects tampering; this only keeps a damaged index from
    surfacing as another exception (or loading inconsistent arrays)."""
    index = LexicalIndex()
    for i in range(20):
        index.add(f"k{i}", f"text number {i} garden lake", time=float(i))
    data = index.to_bytes()
    for end in range(0, len(data), 3):
        with pytest.raises(ValueError):
            LexicalIndex.from_bytes(data[:end])
    rng = random.Random(1)
    for _ in range(400):
        damaged = bytearray(data)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        try:
            loaded = LexicalIndex.from_bytes(bytes(damaged))
        except ValueError:
            continue
        loaded.search("garden lake", 5)  # what loads is usable


def test_neighbours_are_the_live_items_next_in_time_within_the_gap() -> None:
    index = LexicalIndex()
    for key, time in (("c", 30.0), ("a", 10.0), ("b", 20.0), ("far", 500.0)):
        index.add(key, "text", time=time)

    def around(key: str) -> tuple[str | None, str | None]:
        before, after = index.neighbours(gap=15.0)
        row = index.row_of(key)
        assert row is not None
        return (
            index.key_of(int(before[row])) if before[row] >= 0 else None,
            index.key_of(int(after[row])) if after[row] >= 0 else None,
        )

    assert around("b") == ("a", "c")
    assert around("a") == (None, "b")
    assert around("far") == (None, None)  # beyond the gap
    index.remove(["b"])
    assert around("a") == (None, None)  # 20 apart now
    index.add("b2", "text", time=25.0)
    assert around("c") == ("b2", None)


def test_scores_is_zero_for_dead_rows() -> None:
    index = LexicalIndex()
    index.add("a", "lake")
    index.add("b", "lake house")
    index.remove(["a"])
    scores = index.scores("lake")
    assert scores.shape == (index.rows,)
    assert np.count_nonzero(scores) == 1
