"""Use cases of long-term memory: remember (one or many), recall, list, update, history, forget, search."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from pai_core.errors import NotFound
from pai_core.ids import MemoryIds
from pai_core.models import (
    VECTOR_DTYPE,
    IndexedItem,
    ItemRef,
    JsonObject,
    Memory,
    MemoryEdit,
    MemoryPage,
    MemoryVersion,
    Origin,
    SearchHit,
)
from pai_core.ports import Clock, Embedder, MemoryRepository, MemorySearchIndex
from pai_core.requests import StoreMemory
from pai_core.search.scan import DesignScanSearch
from pai_core.services.retrieval import rank_kinds

# The reason a version records when the API's `update` made it (the request carries none).
API_UPDATE_REASON = "updated through the API"


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

    def remember(
        self,
        owner: str,
        *,
        content: str,
        category: str,
        metadata: JsonObject,
        origin: Origin = "api",
        source_session: str | None = None,
    ) -> Memory:
        # Embed first: if that fails nothing has been written.
        embedding = self._embedder.embed([content])[0]
        created_at = self._clock.now()
        memory = Memory(
            id=self._new_id(created_at),
            content=content,
            category=category,
            metadata=metadata,
            created_at=created_at,
            origin=origin,
            source_session=source_session,
        )
        self._repository.add(owner, memory, embedding)
        self._index.put(owner, indexed_memory(memory, embedding))
        return memory

    def remember_many(self, owner: str, items: Sequence[StoreMemory]) -> list[Memory]:
        """Stores every item as a memory of origin `import`, in one embedding call and one batch
        write; the memories in the items' order (their ids sort in that order too)."""
        if not items:
            return []
        # Embed first, all at once: if that fails nothing has been written.
        embeddings = self._embedder.embed([item.content for item in items])
        created_at = self._clock.now()
        memories = [
            Memory(
                id=self._new_id(created_at),
                content=item.content,
                category=item.category,
                metadata=item.metadata,
                created_at=created_at,
                origin="import",
            )
            for item in items
        ]
        self._repository.add_many(owner, list(zip(memories, embeddings, strict=True)))
        for memory, embedding in zip(memories, embeddings, strict=True):
            self._index.put(owner, indexed_memory(memory, embedding))
        return memories

    def update(
        self,
        owner: str,
        memory_id: str,
        *,
        content: str | None = None,
        category: str | None = None,
        metadata: JsonObject | None = None,
        reason: str = API_UPDATE_REASON,
    ) -> Memory:
        """Changes what differs from the memory as it is (the version it replaces stays in its
        history) and the memory as it is now. The content is embedded only when it changes; an
        update that changes nothing stores nothing and returns the memory unchanged. NotFound for
        an unknown id, found before anything is embedded."""
        current = self._repository.get(owner, memory_id)
        if current is None:
            raise NotFound("no such memory")
        edit = _edit_between(current, content=content, category=category, metadata=metadata)
        if edit is None:
            return current
        embedding = self._embedder.embed([edit.content])[0] if edit.content is not None else None
        updated = self._repository.update(
            owner, memory_id, edit, embedding=embedding, reason=reason, at=self._clock.now()
        )
        if updated is None:  # deleted meanwhile
            raise NotFound("no such memory")
        if embedding is not None:
            # Ranked by its new content here at once; a change of category alone reaches this
            # container's index (and every other's) through the change log at the next search.
            self._index.put(owner, indexed_memory(updated, embedding))
        return updated

    def history(self, owner: str, memory_id: str) -> list[MemoryVersion]:
        """Every version of the memory, oldest first, the current one last."""
        versions = self._repository.history(owner, memory_id)
        if versions is None:
            raise NotFound("no such memory")
        return versions

    def recall(self, owner: str, memory_id: str) -> Memory:
        memory = self._repository.get(owner, memory_id)
        if memory is None:
            raise NotFound("no such memory")
        return memory

    def list_memories(
        self, owner: str, *, category: str | None, limit: int, cursor: str | None, origin: Origin | None = None
    ) -> MemoryPage:
        return self._repository.page(owner, category=category, limit=limit, cursor=cursor, origin=origin)

    def forget(self, owner: str, memory_id: str) -> None:
        if not self._repository.delete(owner, memory_id):
            raise NotFound("no such memory")
        self._index.removed(owner, ItemRef("memory", memory_id))

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
        """The index ranks the owner's items; only the memory hits are fetched in full (one
        BatchGetItem) and decrypted, so a memory deleted meanwhile is never a hit.

        `before_fetch` runs once ranking is done and before any memory is read (a request's
        admission, pai_core.limits): what it raises ends the search with nothing read."""
        query_vector = self._embedder.embed([query])[0]
        ranked = rank_kinds(
            self._index,
            owner,
            query_vector,
            text=query,
            kinds={"memory"},
            top=top,
            category=category,
            min_score=min_score,
        )
        if before_fetch is not None:
            before_fetch()
        memory_ids = [hit.ref.id for hit in ranked]
        if not memory_ids:
            return []
        memories = self._repository.get_many(owner, memory_ids)
        hits = [SearchHit(memory=memories[hit.ref.id], score=hit.score) for hit in ranked if hit.ref.id in memories]
        return hits[:top]


def indexed_memory(memory: Memory, embedding: npt.NDArray[np.float32]) -> IndexedItem:
    """What a search index holds of a memory just stored or updated with this embedding."""
    vector = np.asarray(embedding, dtype=VECTOR_DTYPE).tobytes()
    return IndexedItem(ref=ItemRef("memory", memory.id), category=memory.category, vector=vector, text=memory.content)


def _edit_between(
    current: Memory, *, content: str | None, category: str | None, metadata: JsonObject | None
) -> MemoryEdit | None:
    """The edit that makes `current` what the update asks for: only the parts that differ; None when nothing does."""
    changed_content = content if content is not None and content != current.content else None
    changed_category = category if category is not None and category != current.category else None
    changed_metadata = (
        metadata if metadata is not None and _canonical(metadata) != _canonical(current.metadata) else None
    )
    if changed_content is None and changed_category is None and changed_metadata is None:
        return None
    return MemoryEdit(content=changed_content, category=changed_category, metadata=changed_metadata)


def _canonical(value: JsonObject) -> str:
    # Not `==`: Python finds 1, 1.0 and true equal, JSON does not.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
