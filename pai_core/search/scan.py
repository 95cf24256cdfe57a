"""The design's search, kept as the benchmark's baseline ("design scan"): every search reads every
vector of the owner (a Query of their whole partition, paginated at 1 MB), then ranks them all by
brute force. Its reads grow with the number of memories: at 10K memories of ~4 KB, ~10K read
units and ~40 round trips per search. `PAI_SEARCH_MODE=design-scan` selects it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pai_core.models import VECTOR_DTYPE, IndexedItem, ItemRef, RankedItem
from pai_core.ports import MemoryRepository
from pai_core.search.exact import top_k


class DesignScanSearch:
    def __init__(self, repository: MemoryRepository) -> None:
        self._repository = repository

    def search(
        self,
        owner: str,
        query: npt.NDArray[np.float32],
        *,
        text: str = "",
        top: int,
        category: str | None,
        min_score: float | None,
    ) -> list[RankedItem]:
        rows = [row for row in self._repository.vectors(owner) if category is None or row.category == category]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row.vector for row in rows), dtype=VECTOR_DTYPE).reshape(len(rows), -1)
        return [RankedItem(ref=rows[i].ref, score=score) for i, score in top_k(matrix, query, top, min_score=min_score)]

    def put(self, owner: str, item: IndexedItem) -> None:
        """Nothing is kept between searches."""

    def removed(self, owner: str, ref: ItemRef) -> None:
        """Nothing is kept between searches."""
