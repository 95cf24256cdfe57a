"""Use cases of long-term memory: remember, recall, list, forget, search."""

from __future__ import annotations

import os
import time

import numpy as np

from pai_core.errors import NotFound
from pai_core.models import VECTOR_DTYPE, JsonObject, Memory, MemoryPage, SearchHit
from pai_core.ports import Clock, Embedder, MemoryRepository
from pai_core.search import top_k


def new_memory_id() -> str:
    """48 bits of milliseconds then 80 random bits, in hex: unique, and sorting by id sorts by age."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class MemoryService:
    def __init__(self, repository: MemoryRepository, embedder: Embedder, clock: Clock) -> None:
        self._repository = repository
        self._embedder = embedder
        self._clock = clock

    def remember(self, owner: str, *, content: str, category: str, metadata: JsonObject) -> Memory:
        # Embed first: if that fails nothing has been written.
        embedding = self._embedder.embed([content])[0]
        memory = Memory(
            id=new_memory_id(), content=content, category=category, metadata=metadata, created_at=self._clock.now()
        )
        self._repository.add(owner, memory, embedding)
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

    def search(
        self, owner: str, query: str, *, top: int, category: str | None = None, min_score: float | None = None
    ) -> list[SearchHit]:
        """Brute force over the owner's vectors (read with a Query of their partition, not a Scan);
        only the hits are fetched in full and decrypted."""
        rows = [row for row in self._repository.vectors(owner) if category is None or row.category == category]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row.vector for row in rows), dtype=VECTOR_DTYPE).reshape(len(rows), -1)
        query_vector = self._embedder.embed([query])[0]
        ranked = top_k(matrix, query_vector, top, min_score=min_score)
        memories = self._repository.get_many(owner, [rows[index].id for index, _ in ranked])
        # A memory deleted between the two reads is simply not a hit.
        return [
            SearchHit(memory=memories[rows[index].id], score=score)
            for index, score in ranked
            if rows[index].id in memories
        ]
