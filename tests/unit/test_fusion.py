"""Hybrid ranking: how the dense cosine, the lexical match and the time neighbours make one score."""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial

import numpy as np
import numpy.typing as npt
import pytest

from pai_core.models import ItemRef
from pai_core.search.fusion import (
    CHAT_RELEVANCE_FLOOR,
    DENSE_WEIGHT,
    NEIGHBOUR_WEIGHT,
    DenseScores,
    FusionSettings,
    hybrid_search,
    own_scores,
    relevance,
)
from pai_core.search.hybrid import key_ref, ref_key
from pai_core.search.index import VectorIndex
from pai_core.search.lexical import LexicalIndex

WORDS = ["garden", "bicycle", "ramen", "dentist", "piano", "birthday", "hiking", "violin", "lake", "coffee"]


class Dense:
    """Exact cosine over unit vectors, keyed like the lexical index."""

    def __init__(self, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        self.vectors = vectors

    def top(self, query: npt.NDArray[np.float32], count: int) -> list[tuple[str, float]]:
        scored = sorted(((key, float(v @ query)) for key, v in self.vectors.items()), key=lambda pair: -pair[1])
        return scored[:count]

    def scores(self, query: npt.NDArray[np.float32]) -> Sequence[float]:
        return [float(v @ query) for v in self.vectors.values()]

    def scorer(self, query: npt.NDArray[np.float32]) -> DenseScores:
        return lambda keys: np.array([self.vectors[key] @ query for key in keys], dtype=np.float32)


def unit(rng: np.random.Generator, size: int = 8) -> npt.NDArray[np.float32]:
    vector = rng.normal(size=size).astype(np.float32)
    return vector / np.linalg.norm(vector)


def search(
    dense: Dense, lexical: LexicalIndex, text: str, vector: npt.NDArray[np.float32], top: int, **kwargs: object
) -> list[tuple[str, float]]:
    settings = kwargs.pop("settings", FusionSettings())
    assert isinstance(settings, FusionSettings)
    return hybrid_search(
        text,
        dense.top(vector, settings.candidates(top)),
        dense.scorer(vector),
        lexical,
        top,
        settings=settings,
        **kwargs,  # type: ignore[arg-type]
    )


def test_own_score_is_a_weighted_mean_of_cosine_and_term_match_share() -> None:
    cosines = np.array([0.8, -0.2, 0.1], dtype=np.float32)
    lexical = np.array([2.0, 0.0, 9.0], dtype=np.float32)
    own = own_scores(cosines, lexical, 4.0, dense_weight=0.5)
    assert own.tolist() == pytest.approx([0.65, -0.1, 0.55])  # a share above 1 is clipped
    assert own_scores(cosines, lexical, 0.0, dense_weight=0.5).tolist() == pytest.approx([0.4, -0.1, 0.05])


def test_relevance_lends_the_better_neighbour_and_stays_in_range() -> None:
    own = np.array([0.2, 0.2, -0.5], dtype=np.float32)
    before = np.array([0.9, 0.0, -0.4], dtype=np.float32)
    after = np.array([0.1, 0.0, -0.4], dtype=np.float32)
    scores = relevance(own, before, after, weight=0.5)
    assert scores.tolist() == pytest.approx([(0.2 + 0.45) / 1.5, 0.2 / 1.5, -0.5 / 1.5])
    assert all(-DENSE_WEIGHT <= s <= 1.0 for s in relevance(own, before, after, weight=NEIGHBOUR_WEIGHT))


def brute_force(
    dense: Dense, lexical: LexicalIndex, text: str, vector: npt.NDArray[np.float32], settings: FusionSettings
) -> list[tuple[str, float]]:
    keys = list(dense.vectors)
    bm25 = lexical.score_keys(text, keys)
    own = own_scores(
        np.array(dense.scores(vector), dtype=np.float32),
        bm25,
        lexical.best_possible(text),
        dense_weight=settings.dense_weight,
    )
    before, after = lexical.neighbours(gap=settings.neighbour_gap_ms)
    of_key = dict(zip(keys, own.tolist(), strict=True))

    def lent(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.array([of_key[lexical.key_of(int(row))] if row >= 0 else 0.0 for row in rows], dtype=np.float32)

    rows = np.array([lexical.row_of(key) for key in keys])
    scores = relevance(own, lent(before[rows]), lent(after[rows]), weight=settings.neighbour_weight)
    return sorted(zip(keys, scores.tolist(), strict=True), key=lambda pair: -pair[1])


@pytest.mark.parametrize("neighbour_weight", [0.0, NEIGHBOUR_WEIGHT])
def test_hybrid_search_ranks_as_the_full_computation_over_every_item(neighbour_weight: float) -> None:
    rng = np.random.default_rng(4)
    words = random.Random(4)
    lexical = LexicalIndex()
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    for i in range(80):
        key = f"m{i}"
        lexical.add(key, " ".join(words.choice(WORDS) for _ in range(words.randint(1, 6))), time=float(i // 3 * 1000))
        vectors[key] = unit(rng)
    dense = Dense(vectors)
    settings = FusionSettings(neighbour_weight=neighbour_weight, neighbour_gap_ms=500.0)
    for text in ("garden piano", "lake", "nothing matches"):
        vector = unit(rng)
        found = search(dense, lexical, text, vector, 10, settings=settings)
        expected = brute_force(dense, lexical, text, vector, settings)[:10]
        assert [score for _, score in found] == pytest.approx([score for _, score in expected], abs=1e-6)
        assert [key for key, _ in found] == [key for key, _ in expected]


def test_a_word_match_ranks_where_the_cosine_alone_would_not() -> None:
    rng = np.random.default_rng(1)
    query = unit(rng, 384)
    lexical = LexicalIndex()
    vectors = {}
    for i in range(30):
        lexical.add(f"m{i}", "coffee with friends", time=float(i * 10**7))  # far apart: no neighbours
        vectors[f"m{i}"] = unit(rng, 384)
    lexical.add("passport", "passport renewal at the town hall", time=1e12)
    unrelated = unit(rng, 384)
    vectors["passport"] = unrelated - (unrelated @ query) * query  # cosine 0
    vectors["passport"] /= np.linalg.norm(vectors["passport"])
    dense = Dense(vectors)
    assert dense.top(query, 31)[0][0] != "passport"
    found = search(dense, lexical, "when is my passport renewal?", query, 3)
    assert found[0][0] == "passport"


def test_a_memory_stored_next_to_a_strong_match_outranks_an_equal_isolated_one() -> None:
    rng = np.random.default_rng(2)
    query = unit(rng)
    side = unit(rng)
    side = side - (side @ query) * query
    side /= np.linalg.norm(side)
    middling = (0.3 * query + np.sqrt(1 - 0.09) * side).astype(np.float32)
    lexical = LexicalIndex()
    vectors = {"match": query.copy(), "next": middling, "alone": middling.copy()}
    lexical.add("match", "text one", time=0.0)
    lexical.add("next", "text two", time=60_000.0)  # a minute later: the same sitting
    lexical.add("alone", "text three", time=10**9)  # days later
    found = dict(search(Dense(vectors), lexical, "unrelated words", query, 3))
    assert found["next"] > found["alone"]
    assert found["match"] > found["next"]


def test_min_score_top_and_keys_the_lexical_index_lacks() -> None:
    rng = np.random.default_rng(3)
    query = unit(rng)
    lexical = LexicalIndex()
    vectors = {f"m{i}": unit(rng) for i in range(20)}
    for i, key in enumerate(vectors):
        lexical.add(key, "garden" if i % 2 else "lake", time=float(i * 10**8))
    vectors["not-lexical"] = query.copy()  # the dense index has it, the lexical index not yet
    found = search(Dense(vectors), lexical, "garden", query, 5)
    assert len(found) == 5
    assert found[0] == ("not-lexical", pytest.approx(DENSE_WEIGHT / (1 + NEIGHBOUR_WEIGHT)))
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= score <= 1.0 for score in scores)
    floor = scores[2]
    kept = search(Dense(vectors), lexical, "garden", query, 5, min_score=floor)
    assert kept == [(key, score) for key, score in found if score >= floor]
    assert search(Dense(vectors), lexical, "garden", query, 5, min_score=1.0) == []
    assert search(Dense(vectors), lexical, "garden", query, 0) == []


def test_empty_indexes_find_nothing() -> None:
    query = unit(np.random.default_rng(0))
    assert search(Dense({}), LexicalIndex(), "anything", query, 5) == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="dense_weight"):
        FusionSettings(dense_weight=1.5)
    with pytest.raises(ValueError, match="neighbour_weight"):
        FusionSettings(neighbour_weight=-0.1)


def test_the_chat_floor_is_a_relevance_inside_the_range() -> None:
    assert -DENSE_WEIGHT < CHAT_RELEVANCE_FLOOR < 1.0


def test_items_the_dense_side_rules_out_are_neither_returned_nor_lend_to_neighbours() -> None:
    """A category filter: the lexical index knows no categories, the dense index's scores_of says
    -inf for items of another category, and those drop out of the ranking."""
    rng = np.random.default_rng(6)
    query = unit(rng, 16)
    refs = [ItemRef("memory", name) for name in ("work-1", "home-1", "work-2", "home-2")]
    keys = [ref_key(ref) for ref in refs]
    dense = VectorIndex(16)
    dense.add_rows(refs, ["work", "home", "work", "home"], np.stack([unit(rng, 16) for _ in keys]))
    lexical = LexicalIndex()
    for i, key in enumerate(keys):
        lexical.add(key, "dentist appointment" if key == keys[1] else "weekly report", time=float(i))

    def cosines(wanted: Sequence[str], category: str | None = None) -> npt.NDArray[np.float32]:
        return dense.scores_of(query, [key_ref(key) for key in wanted], category=category)

    scores = dense.scores_of(query, [*refs, ItemRef("memory", "unknown")], category="work")
    assert np.isinf(scores[[1, 3, 4]]).all()
    assert np.isfinite(scores[[0, 2]]).all()
    found = hybrid_search(
        "dentist appointment",
        [(ref_key(hit.ref), hit.score) for hit in dense.search(query, 100, category="work")],
        partial(cosines, category="work"),
        lexical,
        4,
    )
    assert [key for key, _ in found] == sorted([keys[0], keys[2]], key=lambda key: -float(cosines([key])[0]))
    expected = own_scores(cosines([keys[0]]), np.zeros(1, dtype=np.float32), 1.0, dense_weight=DENSE_WEIGHT)
    assert dict(found)[keys[0]] == pytest.approx(float(expected[0]) / (1 + NEIGHBOUR_WEIGHT))  # home-1 lends nothing
