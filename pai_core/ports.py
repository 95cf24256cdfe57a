"""Protocols for everything that does I/O or heavy work. Services depend on these, never on boto3."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pai_core.models import ChatMessage, Completion, Memory, MemoryPage, MemoryVector, TextDelta, Turn


class Clock(Protocol):
    def now(self) -> datetime: ...


class Embedder(Protocol):
    dimensions: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalized row per text."""
        ...


class MemoryRepository(Protocol):
    def add(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> None: ...

    def get(self, owner: str, memory_id: str) -> Memory | None: ...

    def get_many(self, owner: str, memory_ids: Sequence[str]) -> dict[str, Memory]: ...

    def page(self, owner: str, *, category: str | None, limit: int, cursor: str | None) -> MemoryPage: ...

    def delete(self, owner: str, memory_id: str) -> bool:
        """True when the memory existed and is now gone."""
        ...

    def vectors(self, owner: str) -> Iterable[MemoryVector]: ...


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
