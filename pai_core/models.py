"""The records the domain passes around."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

# Embeddings are stored as little-endian float32 bytes: 1,536 bytes for 384 dimensions.
VECTOR_DTYPE = np.dtype("<f4")


def iso_utc(moment: datetime) -> str:
    """The API's time format: ISO 8601, UTC, milliseconds, 'Z'."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


Role = Literal["user", "assistant"]
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Memory:
    id: str
    content: str
    category: str
    metadata: JsonObject
    created_at: datetime


@dataclass(frozen=True)
class MemoryPage:
    items: list[Memory]
    cursor: str | None


@dataclass(frozen=True)
class MemoryVector:
    """What a search needs of a memory before it knows whether the memory is a hit."""

    id: str
    category: str
    vector: bytes


@dataclass(frozen=True)
class ChangeStamp:
    """An owner's head item, read by key on every warm search: `version` moves with every store or
    delete, `generation` with every forget (after which nothing built before may be kept or written)."""

    version: int
    generation: int


@dataclass(frozen=True)
class Deletion:
    """A tombstone: memory `memory_id` was deleted; `id` is the tombstone's own time-ordered id."""

    id: str
    memory_id: str


@dataclass(frozen=True)
class SearchHit:
    memory: Memory
    score: float


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    at: datetime


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: Usage


@dataclass(frozen=True)
class TextDelta:
    """A piece of a reply as the model produces it."""

    text: str


@dataclass(frozen=True)
class Source:
    id: str
    score: float


@dataclass(frozen=True)
class ChatReply:
    session_id: str
    reply: str
    model: str
    usage: Usage
    sources: list[Source] = field(default_factory=list)
