"""Exact cosine top-k over unit vectors with numpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def top_k(
    matrix: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    k: int,
    *,
    min_score: float | None = None,
) -> list[tuple[int, float]]:
    """Row indices and scores of the k rows most similar to `query`, best first.

    Rows and query are L2-normalized, so the dot product is the cosine similarity."""
    if matrix.shape[0] == 0 or k <= 0:
        return []
    return top_k_scores(matrix @ query, k, min_score=min_score)


def top_k_scores(scores: npt.NDArray[np.float32], k: int, *, min_score: float | None = None) -> list[tuple[int, float]]:
    """Positions and values of the k highest scores, best first. A score of -inf marks a row that
    is not a candidate (deleted, another category): it never comes back."""
    if scores.shape[0] == 0 or k <= 0:
        return []
    candidates = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    ranked = candidates[np.argsort(-scores[candidates], kind="stable")]
    floor = -np.inf if min_score is None else min_score
    # Scores are cosines of unit vectors; float32 rounding can put them a hair outside [-1, 1].
    return [
        (int(i), min(1.0, max(-1.0, float(scores[i])))) for i in ranked if scores[i] > -np.inf and scores[i] >= floor
    ]
