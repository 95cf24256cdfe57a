"""Use cases of long-term memory: remember, recall, list, forget, search."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pai_core.errors import NotFound
from pai_core.ids import MemoryIds
from pai_core.models import VECTOR_DTYPE, JsonObject, Memory, MemoryPage, MemoryVector, SearchHit
from pai_core.ports import Clock, Embedder, MemoryRepository, MemorySearchIndex
from pai_core.search.scan import DesignScanSearch


class MemoryService:
    def __init__(
        self,
        repository: MemoryRepository,
        embedder: Embedder,
        clock: Clock,
        *,
        index: MemorySearchIndex | None = None,
    ) -> None:
        """`index` ranks memories for search; without one, every search reads every vector (the
        design's approach, DesignScanSearch)."""
        self._repository = repository
        self._embedder = embedder
        self._clock = clock
        self._index: MemorySearchIndex = index if index is not None else DesignScanSearch(repository)
        self._new_id = MemoryIds()

    def remember(self, owner: str, *, content: str, category: str, metadata: JsonObject) -> Memory:
        # Embed first: if that fails nothing has been written.
        embedding = self._embedder.embed([content])[0]
        created_at = self._clock.now()
        memory = Memory(
            id=self._new_id(created_at), content=content, category=category, metadata=metadata, created_at=created_at
        )
        self._repository.add(owner, memory, embedding)
        vector = MemoryVector(id=memory.id, category=category, vector=np.asarray(embedding, VECTOR_DTYPE).tobytes())
        self._index.added(owner, vector)
        return memory

    def recall(self, owner: str, memory_id: str) -> Memory:
        memory = self._repository.get(owner, memory_id)
        if memory is None:
            raise NotFound("no such memory")
        return memory

    def list_memories(self, owner: str, *, category: str | None, limit: int, cursor: str | None) -> MemoryPage:
        return self._repository.page(owner, category=category, limit=limit, cursor=cursor)

    def forget(self, owner: str, memory_id: str) -> None:
        if not self._repository.delete(owner, memory_id):
            raise NotFound("no such memory")
        self._index.removed(owner, memory_id)

    def search(
        self,
        owner: str,
        query: str,
        *,
        top: int,
        category: str | None = None,
        min_score: float | None = None,
        before_fetch: Callable[[], None] | None = None,
    ) -> list[SearchHit]:
        """The index ranks the owner's vectors; only the hits are fetched in full (one
        BatchGetItem) and decrypted, so a memory deleted meanwhile is never a hit.

        `before_fetch` runs once ranking is done and before any memory is read (a request's
        admission, pai_core.limits): what it raises ends the search with nothing read."""
        query_vector = self._embedder.embed([query])[0]
        ranked = self._index.search(owner, query_vector, top=top, category=category, min_score=min_score)
        if before_fetch is not None:
            before_fetch()
        if not ranked:
            return []
        memories = self._repository.get_many(owner, [memory_id for memory_id, _ in ranked])
        return [SearchHit(memory=memories[i], score=score) for i, score in ranked if i in memories]
