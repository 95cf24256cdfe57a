"""Use cases of long-term memory: remember, recall, list, forget, search."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pai_core.errors import NotFound
from pai_core.ids import MemoryIds
from pai_core.models import VECTOR_DTYPE, IndexedItem, ItemRef, JsonObject, Memory, MemoryPage, SearchHit
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
        self._index.put(owner, indexed_memory(memory, embedding))
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
        self._index.removed(owner, ItemRef("memory", memory_id))

    def search(
        self, owner: str, query: str, *, top: int, category: str | None = None, min_score: float | None = None
    ) -> list[SearchHit]:
        """The index ranks the owner's items; only the memory hits are fetched in full (one
        BatchGetItem) and decrypted, so a memory deleted meanwhile is never a hit."""
        query_vector = self._embedder.embed([query])[0]
        ranked = self._index.search(owner, query_vector, text=query, top=top, category=category, min_score=min_score)
        memory_ids = [hit.ref.id for hit in ranked if hit.ref.kind == "memory"]
        if not memory_ids:
            return []
        memories = self._repository.get_many(owner, memory_ids)
        return [SearchHit(memory=memories[hit.ref.id], score=hit.score) for hit in ranked if hit.ref.id in memories]


def indexed_memory(memory: Memory, embedding: npt.NDArray[np.float32]) -> IndexedItem:
    """What a search index holds of a memory just stored or updated with this embedding."""
    vector = np.asarray(embedding, dtype=VECTOR_DTYPE).tobytes()
    return IndexedItem(ref=ItemRef("memory", memory.id), category=memory.category, vector=vector, text=memory.content)
