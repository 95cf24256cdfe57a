"""Hybrid ranking: the dense cosine and the lexical BM25 of each item, fused into one score.

The score of an item for a query (what search returns and what `minScore` filters on):

    own       = DENSE_WEIGHT * cosine + (1 - DENSE_WEIGHT) * BM25 / best_possible_BM25
    relevance = (own + NEIGHBOUR_WEIGHT * max(0, own of its time neighbours)) / (1 + NEIGHBOUR_WEIGHT)

- `cosine` is the query's cosine with the item's vector, in [-1, 1].
- `BM25 / best_possible_BM25` is the item's term match as a share of the most any item could score for
  this query (each query word's inverse document frequency times k1 + 1): in [0, 1], 0 when it holds
  no word of the query. Dividing by a per-query bound rather than by the best item found keeps the
  score absolute: a query that matches nothing well does not have its best weak match made 1.
- Time neighbours: the items stored just before and just after it, when stored within
  `NEIGHBOUR_GAP_MS` of it. Things written down in one sitting share context (a conversation's
  turns, the lines of one note), so an item next to a strong match is more likely relevant; the
  item's own match still counts most.

So `relevance` is in [-DENSE_WEIGHT, 1] (inside the API's [-1, 1]), higher is more relevant, and it is
monotone in both the cosine and the term match: `minScore` keeps its meaning of "at least this much
agreement between query and memory", on this scale. Weighted fusion of normalized scores was chosen
over reciprocal rank fusion by measurement (`make bench-quality`, benchmarks/RESULTS.md), and because
ranks carry no meaning a floor could use.

Candidates: the best `candidates(top)` of each ranking, their neighbours, and those neighbours'
neighbours (for their own neighbour term); each is scored in full by both rankings, so the fused
order does not depend on which ranking proposed an item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pai_core.search.lexical import LexicalIndex

DENSE_WEIGHT = 0.5
NEIGHBOUR_WEIGHT = 0.3
NEIGHBOUR_GAP_MS = 10 * 60 * 1000

CHAT_RELEVANCE_FLOOR = 0.29
"""The least relevance a memory (or passage) needs to enter a chat prompt.

Chat asks for a few results (topK 4 by default) and, without a floor, gets them whatever they score:
a memory unrelated to the message then rides along in every prompt, costing tokens and inviting
the model to bring it up. Search keeps no floor of its own (its caller sets `minScore`); chat does.

Calibrated on the LoCoMo dev conversations (`make bench-quality` prints the table in
benchmarks/RESULTS.md): the highest floor, in steps of 0.01, that still keeps 95% of the evidence
turns that reach the top 4 of their questions. Below it fall most of what the top 4 holds for the
other conversations' questions (memories of another life, which should not reach the prompt) and a
share of the non-evidence turns of the own questions, while nearly every own question keeps at least
one memory. It is a value of `relevance` as defined above: change DENSE_WEIGHT, NEIGHBOUR_WEIGHT or
the lexical index's parameters and it must be calibrated again."""


# The dense index's scores: given keys, their cosines with the query (in the same order).
DenseScores = Callable[[Sequence[str]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class FusionSettings:
    dense_weight: float = DENSE_WEIGHT
    neighbour_weight: float = NEIGHBOUR_WEIGHT
    neighbour_gap_ms: float = NEIGHBOUR_GAP_MS
    # Candidates asked of each ranking per requested result (at least `min_candidates`).
    oversample: int = 5
    min_candidates: int = 50

    def __post_init__(self) -> None:
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError("dense_weight must be in [0, 1]")
        if self.neighbour_weight < 0.0:
            raise ValueError("neighbour_weight must be >= 0")

    def candidates(self, top: int) -> int:
        return max(top * self.oversample, self.min_candidates)


DEFAULT_FUSION = FusionSettings()


def own_scores(
    cosines: npt.NDArray[np.float32], lexical: npt.NDArray[np.float32], best_possible: float, *, dense_weight: float
) -> npt.NDArray[np.float32]:
    """Each item's own fused score (before neighbours), from its cosine and its BM25. A cosine of
    -inf marks an item that is not a candidate (another category, say): its score is -inf too."""
    share = lexical / best_possible if best_possible > 0 else np.zeros_like(lexical)
    share = np.clip(share, 0.0, 1.0)
    candidate = np.isfinite(cosines)
    fused = dense_weight * np.where(candidate, cosines, 0.0) + (1.0 - dense_weight) * share
    return np.asarray(np.where(candidate, fused, -np.inf), dtype=np.float32)


def relevance(
    own: npt.NDArray[np.float32],
    before: npt.NDArray[np.float32],
    after: npt.NDArray[np.float32],
    *,
    weight: float,
) -> npt.NDArray[np.float32]:
    """Each item's relevance from its own score and its neighbours' (0 where it has none), scaled
    so that it stays within the range of the own scores."""
    neighbour = np.maximum(np.maximum(before, after), 0.0)
    return np.asarray((own + weight * neighbour) / (1.0 + weight), dtype=np.float32)


def hybrid_search(
    query: str,
    dense_top: Sequence[tuple[str, float]],
    dense_scores: DenseScores,
    lexical: LexicalIndex,
    top: int,
    *,
    min_score: float | None = None,
    settings: FusionSettings = DEFAULT_FUSION,
) -> list[tuple[str, float]]:
    """The best `top` keys by relevance (see the module docstring), best first, with it.

    `dense_top`: the dense index's best `settings.candidates(top)` keys and cosines for the query.
    `dense_scores`: the cosines of any keys, -inf for a key that must not be returned (not held by
    the dense index, or filtered out: another category or source); such an item lends its
    neighbours nothing either. `lexical` holds the same keys; a key it lacks still ranks, on its
    cosine alone with no term match."""
    if top <= 0:
        return []
    lexical_all = lexical.scores(query)
    best = lexical.best_possible(query)
    wanted = settings.candidates(top)
    chosen = np.zeros(lexical.rows, dtype=bool)
    outside: list[tuple[str, float]] = []  # dense keys the lexical index lacks
    for key, cosine in dense_top:
        row = lexical.row_of(key)
        if row is None:
            outside.append((key, settings.dense_weight * cosine / (1.0 + settings.neighbour_weight)))
        else:
            chosen[row] = True
    matched = np.flatnonzero(lexical_all > 0)
    if matched.shape[0] > wanted:
        matched = matched[np.argpartition(-lexical_all[matched], wanted - 1)[:wanted]]
    chosen[matched] = True
    if settings.neighbour_weight > 0:
        before, after = lexical.neighbours(gap=settings.neighbour_gap_ms)
        ranked = _with_adjacent(chosen, before, after)
        scored = np.flatnonzero(_with_adjacent(ranked, before, after))
        ranked_rows = np.flatnonzero(ranked)
    else:
        ranked_rows = scored = np.flatnonzero(chosen)
    keys = [lexical.key_of(row) for row in scored.tolist()]
    cosines = np.asarray(dense_scores(keys), dtype=np.float32) if keys else np.zeros(0, dtype=np.float32)
    own = own_scores(cosines, lexical_all[scored], best, dense_weight=settings.dense_weight)
    if settings.neighbour_weight > 0:
        # Every ranked row is scored; the other scored rows only lend their own scores.
        position = np.full(lexical.rows + 1, -1, dtype=np.int64)  # the last entry answers for "no neighbour"
        position[scored] = np.arange(scored.shape[0])
        padded = np.append(own, np.float32(0.0))  # position -1: no neighbour, nothing lent
        at = position[ranked_rows]
        scores = relevance(
            own[at],
            padded[position[before[ranked_rows]]],
            padded[position[after[ranked_rows]]],
            weight=settings.neighbour_weight,
        )
        ranked_keys = [keys[i] for i in at.tolist()]
    else:
        scores, ranked_keys = own, keys
    return _best(ranked_keys, scores, outside, top, min_score=min_score)


def _with_adjacent(
    chosen: npt.NDArray[np.bool_], before: npt.NDArray[np.int64], after: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """`chosen` (a mask over rows) with the neighbours of its rows added."""
    rows = np.flatnonzero(chosen)
    extra = np.concatenate([before[rows], after[rows]])
    grown = chosen.copy()
    grown[extra[extra >= 0]] = True
    return grown


def _best(
    keys: Sequence[str],
    scores: npt.NDArray[np.float32],
    outside: Sequence[tuple[str, float]],
    top: int,
    *,
    min_score: float | None,
) -> list[tuple[str, float]]:
    """The `top` best of keys and their scores plus `outside`, at or above `min_score`, best first
    (ties in the order given)."""
    if outside:
        keys = [*keys, *(key for key, _ in outside)]
        scores = np.concatenate([scores, np.array([score for _, score in outside], dtype=np.float32)])
    floor = -np.inf if min_score is None else min_score
    kept = np.flatnonzero(np.isfinite(scores) & (scores >= floor))
    if kept.shape[0] > top:
        kept = kept[np.argpartition(-scores[kept], top - 1)[:top]]
        kept.sort()  # ties keep the order given
    ranked = kept[np.argsort(-scores[kept], kind="stable")]
    return [(keys[i], min(1.0, max(-1.0, float(scores[i])))) for i in ranked.tolist()]
