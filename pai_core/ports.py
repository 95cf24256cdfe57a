"""Protocols for everything that does I/O or heavy work. Services depend on these, never on boto3."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pai_core.auth import ApiKeyInfo, StoredApiKey
from pai_core.models import (
    ChangeEntry,
    ChangeStamp,
    ChatMessage,
    Completion,
    IndexedItem,
    ItemRef,
    Memory,
    MemoryEdit,
    MemoryPage,
    MemoryVersion,
    Origin,
    RankedItem,
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

    def vectors(self, owner: str) -> Iterable[IndexedItem]:
        """Every memory as a search index holds it (the design's read per search)."""
        ...


class ChangeLog(Protocol):
    """What keeps a search index current without reading every item on every search: the owner's
    head read by key, and a key-range read of the change-log entries past a position."""

    def change_stamp(self, owner: str) -> ChangeStamp:
        """The owner's head: a version that moves after every change recorded in the log, and the
        generation that every forget of the owner moves."""
        ...

    def changes_after(self, owner: str, after_id: str) -> Iterable[ChangeEntry]:
        """The entries whose id sorts after `after_id`, oldest first (ids are time-ordered)."""
        ...


class IndexSource(Protocol):
    """The items of one kind as a search index holds them (a reader per ItemKind)."""

    def all_items(self, owner: str) -> Iterable[IndexedItem]:
        """Every item of the owner, read consistently (a cold load without a snapshot)."""
        ...

    def items_by_id(self, owner: str, ids: Sequence[str]) -> Iterable[IndexedItem]:
        """The current state of these items, read by key; an item that is gone is left out."""
        ...


class IndexSnapshotStore(Protocol):
    """One opaque snapshot of an owner's search index, stored encrypted."""

    def load(self, owner: str) -> bytes | None: ...

    def save(self, owner: str, payload: bytes) -> None:
        """Seal and store; never makes the owner a key (a forgotten owner has none)."""
        ...

    def purge(self, owner: str) -> int: ...


class MemorySearchIndex(Protocol):
    """Ranks an owner's items (memories, passages) for a query's vector and text."""

    def search(
        self,
        owner: str,
        query: npt.NDArray[np.float32],
        *,
        text: str,
        top: int,
        category: str | None,
        min_score: float | None,
    ) -> list[RankedItem]:
        """Item refs and scores, best first, at most `top`."""
        ...

    def put(self, owner: str, item: IndexedItem) -> None:
        """This container stored or updated an item: index it as it is now rather than at the next refresh."""
        ...

    def removed(self, owner: str, ref: ItemRef) -> None:
        """This container deleted an item: drop it from the index now."""
        ...


class MemoryArchive(Protocol):
    """All of one user's memories at once: their export, and forgetting them."""

    def all_memories(self, owner: str) -> Iterable[Memory]:
        """The current memories."""
        ...

    def all_histories(self, owner: str) -> dict[str, list[MemoryVersion]]:
        """Every version, oldest first, of each memory that was ever updated, by memory id."""
        ...

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


class Metrics(Protocol):
    """Counters for whoever runs the service (CloudWatch metrics in AWS, through the embedded metric
    format). Dimensions come from small fixed sets (a route, an outcome, a kind): never a user's id
    or anything a user wrote, which would make a metric per user and a bill per metric."""

    def count(self, name: str, value: int = 1, /, **dimensions: str) -> None:
        """Add `value` to the counter `name` under these dimensions, for the invocation's flush."""
        ...


class NoMetrics:
    """The Metrics of code that is given none: counts nothing."""

    def count(self, name: str, value: int = 1, /, **dimensions: str) -> None:
        return None

    def flush(self) -> None:
        return None


NO_METRICS = NoMetrics()
