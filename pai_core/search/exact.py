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
    scores = matrix @ query
    candidates = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    ranked = candidates[np.argsort(-scores[candidates], kind="stable")]
    return [(int(index), float(scores[index])) for index in ranked if min_score is None or scores[index] >= min_score]
