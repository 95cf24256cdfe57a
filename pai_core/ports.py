"""Protocols for everything that does I/O or heavy work. Services depend on these, never on boto3."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pai_core.auth import ApiKeyInfo, StoredApiKey
from pai_core.models import (
    ChangeStamp,
    ChatMessage,
    Completion,
    Deletion,
    Memory,
    MemoryEdit,
    MemoryPage,
    MemoryVector,
    MemoryVersion,
    Origin,
    TextDelta,
    Turn,
)


class Clock(Protocol):
    def now(self) -> datetime: ...


class Embedder(Protocol):
    dimensions: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalized row per text."""
        ...


class MemoryRepository(Protocol):
    def add(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> None: ...

    def add_many(self, owner: str, memories: Sequence[tuple[Memory, npt.NDArray[np.float32]]]) -> None:
        """Store several new memories (each written once, even when a write is retried)."""
        ...

    def update(
        self,
        owner: str,
        memory_id: str,
        edit: MemoryEdit,
        *,
        embedding: npt.NDArray[np.float32] | None,
        reason: str | None,
        at: datetime,
    ) -> Memory | None:
        """Apply `edit` (with the new content's embedding when the content changes), keeping the
        version it replaces in the memory's history; the memory as it is now, None when unknown."""
        ...

    def history(self, owner: str, memory_id: str) -> list[MemoryVersion] | None:
        """Every version, oldest first, the current one last; None when there is no such memory."""
        ...

    def get(self, owner: str, memory_id: str) -> Memory | None: ...

    def get_many(self, owner: str, memory_ids: Sequence[str]) -> dict[str, Memory]: ...

    def page(
        self, owner: str, *, category: str | None, limit: int, cursor: str | None, origin: Origin | None = None
    ) -> MemoryPage: ...

    def delete(self, owner: str, memory_id: str) -> bool:
        """True when the memory existed and is now gone."""
        ...

    def vectors(self, owner: str) -> Iterable[MemoryVector]: ...


class MemoryChangeFeed(Protocol):
    """What keeps a search index current without reading every memory on every search: a change
    stamp read by key, and key-range reads of what was added or deleted after a watermark."""

    def change_stamp(self, owner: str) -> ChangeStamp:
        """The owner's head: a version that changes whenever one of the owner's memories is stored or
        deleted, and the generation that every forget of the owner moves."""
        ...

    def all_vectors(self, owner: str) -> Iterable[MemoryVector]:
        """Every vector of the owner, read consistently (a cold load without a snapshot)."""
        ...

    def vectors_after(self, owner: str, after_id: str) -> Iterable[MemoryVector]:
        """The vectors of memories whose id sorts after `after_id` (ids are time-ordered)."""
        ...

    def deletions_after(self, owner: str, after_id: str) -> Iterable[Deletion]:
        """Tombstones whose own id sorts after `after_id`."""
        ...


class IndexSnapshotStore(Protocol):
    """One opaque snapshot of an owner's search index, stored encrypted."""

    def load(self, owner: str) -> bytes | None: ...

    def save(self, owner: str, payload: bytes) -> None:
        """Seal and store; never makes the owner a key (a forgotten owner has none)."""
        ...

    def purge(self, owner: str) -> int: ...


class MemorySearchIndex(Protocol):
    """Ranks an owner's memories by cosine similarity to a query vector."""

    def search(
        self, owner: str, query: npt.NDArray[np.float32], *, top: int, category: str | None, min_score: float | None
    ) -> list[tuple[str, float]]:
        """Memory ids and scores, best first, at most `top`."""
        ...

    def added(self, owner: str, vector: MemoryVector) -> None:
        """This container stored a memory: index it now rather than at the next refresh."""
        ...

    def removed(self, owner: str, memory_id: str) -> None:
        """This container deleted a memory: drop it from the index now."""
        ...


class MemoryArchive(Protocol):
    """All of one user's memories at once: their export, and forgetting them."""

    def all_memories(self, owner: str) -> Iterable[Memory]: ...

    def purge(self, owner: str) -> int:
        """Delete everything the owner has stored; how many memories that was."""
        ...


class ConversationArchive(Protocol):
    def all_turns(self, owner: str) -> Iterable[tuple[str, Turn]]:
        """Every stored turn, oldest first, with its session id."""
        ...

    def purge(self, owner: str) -> int: ...


class SnapshotPurger(Protocol):
    def purge(self, owner: str) -> int:
        """Delete every stored version of the owner's derived data (index snapshots)."""
        ...


class OwnerGenerations(Protocol):
    def move_generation(self, owner: str) -> int:
        """Move the owner's generation (kept through a purge); returns the new one, at least 1."""
        ...


class CredentialRevoker(Protocol):
    def revoke_all(self, user_id: str) -> int:
        """Revoke every API key of the user; how many were live."""
        ...


class ConversationRepository(Protocol):
    def append(self, owner: str, session_id: str, turn: Turn) -> None: ...

    def recent(self, owner: str, session_id: str, *, now: datetime, limit: int) -> list[Turn]:
        """The newest unexpired turns, at most `limit`, oldest first."""
        ...


class ChatModel(Protocol):
    name: str
    context_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion: ...

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        """TextDeltas as the reply is produced, then exactly one Completion: the whole reply and usage."""
        ...


class StorageProbe(Protocol):
    def check(self) -> None:
        """Raise UpstreamUnavailable when storage cannot be reached."""
        ...


class UsageCounters(Protocol):
    """Named counters that only grow, each added to atomically (per-user limits)."""

    def add(self, name: str, amount: int, *, expires_at: datetime) -> int:
        """Adds `amount` to the counter, creating it at 0 first; its total after this addition.
        The counter may be forgotten after `expires_at`."""
        ...

    def get(self, name: str) -> int:
        """The counter's total; 0 when it was never added to (or has expired)."""
        ...


class ApiKeyStore(Protocol):
    """API keys by key id (one read per check), with the user's keys by user id."""

    def add(self, key: StoredApiKey) -> None:
        """Raise Conflict when the key id is taken."""
        ...

    def get(self, key_id: str) -> StoredApiKey | None: ...

    def for_user(self, user_id: str) -> Iterable[ApiKeyInfo]: ...

    def every_key(self) -> Iterable[ApiKeyInfo]:
        """Every key of every user: reads the whole store (administration only)."""
        ...

    def revoke(self, key_id: str, *, at: datetime) -> ApiKeyInfo | None:
        """Marks the key revoked unless it already is; the key as it is now, None when unknown."""
        ...
