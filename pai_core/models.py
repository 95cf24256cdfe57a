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
# How a memory came to be: through POST /memory `store`, learned from chat, or `store_many`.
Origin = Literal["api", "learned", "import"]
ORIGINS: tuple[Origin, ...] = ("api", "learned", "import")
# What a search index holds: memories now, passages of documents next.
ItemKind = Literal["memory", "passage"]
ChangeOp = Literal["put", "update", "delete"]


@dataclass(frozen=True)
class Memory:
    id: str
    content: str
    category: str
    metadata: JsonObject
    created_at: datetime
    updated_at: datetime | None = None  # None until the first update (the API then shows createdAt)
    origin: Origin = "api"
    source_session: str | None = None  # the chat session a learned memory came from

    @property
    def last_changed(self) -> datetime:
        return self.updated_at or self.created_at


@dataclass(frozen=True)
class MemoryEdit:
    """What an update changes; None leaves that part as it is."""

    content: str | None = None
    category: str | None = None
    metadata: JsonObject | None = None

    def __post_init__(self) -> None:
        if self.content is None and self.category is None and self.metadata is None:
            raise ValueError("an update changes at least one of content, category, metadata")


@dataclass(frozen=True)
class MemoryVersion:
    """One version of a memory in its history: valid from `valid_from` until `valid_to` (None for the
    current one); `reason` says why it replaced the one before (None for the first)."""

    content: str
    category: str
    metadata: JsonObject
    valid_from: datetime
    valid_to: datetime | None
    reason: str | None

    @classmethod
    def current(cls, memory: Memory, reason: str | None = None) -> MemoryVersion:
        """The version `memory` is now: valid from its last change, with no end yet."""
        return cls(
            content=memory.content,
            category=memory.category,
            metadata=memory.metadata,
            valid_from=memory.last_changed,
            valid_to=None,
            reason=reason,
        )


@dataclass(frozen=True)
class MemoryPage:
    items: list[Memory]
    cursor: str | None


@dataclass(frozen=True, order=True)
class ItemRef:
    """One thing a search index ranks: a memory, or a passage of a document."""

    kind: ItemKind
    id: str


@dataclass(frozen=True)
class IndexedItem:
    """What a search index holds of one item: its vector (little-endian float32 bytes), its category,
    and its text (for lexical statistics, kept only in memory and in the sealed snapshot)."""

    ref: ItemRef
    category: str
    vector: bytes
    text: str


@dataclass(frozen=True)
class ChangeEntry:
    """One entry of an owner's change log: `op` happened to `ref`. `id` is time-ordered (pai_core.ids),
    so the entries past a position are a key-range read."""

    id: str
    op: ChangeOp
    ref: ItemRef


@dataclass(frozen=True)
class RankedItem:
    ref: ItemRef
    score: float


@dataclass(frozen=True)
class ChangeStamp:
    """An owner's head item, read by key on every warm search: `version` moves after every change
    recorded in the owner's change log, `generation` with every forget (after which nothing built
    before may be kept or written)."""

    version: int
    generation: int


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
    """What a chat reply drew on: a memory, or a passage of a document (with its document's id and
    name, and the page the passage starts on)."""

    id: str
    score: float
    kind: Literal["memory", "document"] = "memory"
    document_id: str | None = None
    name: str | None = None
    page: int | None = None


# Whether the user's turn will be read for durable facts about them (pai_core.learning).
LearningState = Literal["queued", "off"]


@dataclass(frozen=True)
class ChatReply:
    session_id: str
    reply: str
    model: str
    usage: Usage
    sources: list[Source] = field(default_factory=list)
    learning: LearningState = "off"
