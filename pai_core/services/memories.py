"""Use cases of long-term memory: remember, recall, list, forget, search."""

from __future__ import annotations

import os
import threading
from datetime import datetime

import numpy as np

from pai_core.errors import NotFound
from pai_core.models import VECTOR_DTYPE, JsonObject, Memory, MemoryPage, SearchHit
from pai_core.ports import Clock, Embedder, MemoryRepository
from pai_core.search import top_k


class MemoryIds:
    """48 bits of creation milliseconds, then 80 random bits, in hex (like a ULID): unique, and
    sorting by id sorts by age. Within one millisecond the random part counts up, so ids made by
    one container stay in order."""

    def __init__(self) -> None:
        self._last = (-1, 0)
        self._lock = threading.Lock()

    def __call__(self, created_at: datetime) -> str:
        millis = int(created_at.timestamp() * 1000)
        with self._lock:
            last_millis, last_random = self._last
            if millis <= last_millis:
                millis, random_part = last_millis, last_random + 1
            else:
                random_part = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
            self._last = (millis, random_part)
        return f"{millis:012x}{random_part:020x}"


class MemoryService:
    def __init__(self, repository: MemoryRepository, embedder: Embedder, clock: Clock) -> None:
        self._repository = repository
        self._embedder = embedder
        self._clock = clock
        self._new_id = MemoryIds()

    def remember(self, owner: str, *, content: str, category: str, metadata: JsonObject) -> Memory:
        # Embed first: if that fails nothing has been written.
        embedding = self._embedder.embed([content])[0]
        created_at = self._clock.now()
        memory = Memory(
            id=self._new_id(created_at), content=content, category=category, metadata=metadata, created_at=created_at
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
