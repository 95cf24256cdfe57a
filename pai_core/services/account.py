"""A user's whole account: everything they stored, decrypted, for them alone, page by page; and
forgetting them."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pai_core.crypto import BranchKeyring
from pai_core.documents.records import Document, DocumentPage
from pai_core.errors import InvalidInput
from pai_core.ids import ID_HEX_CHARS
from pai_core.models import Memory, MemoryPage, MemoryVersion, Origin, Turn
from pai_core.ports import ConversationArchive, CredentialRevoker, OwnerGenerations, SnapshotPurger


class ExportableMemories(Protocol):
    """What the account needs of the memory store: pages of memories (the list's own, newest
    first), each memory's history, and purging the owner. (MemoryRepository and MemoryArchive
    together; DynamoMemoryRepository is all three.)"""

    def page(
        self, owner: str, *, category: str | None, limit: int, cursor: str | None, origin: Origin | None = None
    ) -> MemoryPage: ...

    def history(self, owner: str, memory_id: str) -> list[MemoryVersion] | None: ...

    def purge(self, owner: str) -> int: ...


class ExportableDocuments(Protocol):
    """What the account needs of the knowledge base (DocumentService): pages of documents, newest
    first, each one's extracted text, and purging the owner's documents."""

    def list_documents(self, owner: str, *, limit: int, cursor: str | None) -> DocumentPage: ...

    def text(self, owner: str, document_id: str) -> str: ...

    def purge(self, owner: str) -> int: ...


@dataclass(frozen=True)
class AccountExport:
    """One page of a user's export (or all of it): memories newest first, each with its history
    (`histories[memory.id]`, oldest version first), then conversation turns oldest first.
    `cursor` asks for the next page; None on the last."""

    memories: list[Memory]
    turns: list[tuple[str, Turn]]
    histories: dict[str, list[MemoryVersion]] = field(default_factory=dict)
    cursor: str | None = None
    # After the memories, before the turns: each document with the text read from it.
    documents: list[tuple[Document, str]] = field(default_factory=list)


# A page of the export holds about this much of the user's data, measured as the JSON it becomes:
# well below what a Lambda function may answer (6 MB), whatever the page holds. A page always holds
# at least one entry, so every export advances; only a memory whose history alone is larger than the
# limit makes a page larger.
EXPORT_PAGE_BYTES = 1024 * 1024
# ... and at most this many memories: each updated memory's history is one more read.
EXPORT_PAGE_MEMORIES = 200
# Memories read per call while filling a page.
_EXPORT_READ_BATCH = 50
# What shaping adds around each entry's own text (keys, ids, times, origin), counted generously.
_ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class ForgetReport:
    key_versions: int
    api_keys: int
    memories: int
    conversation_turns: int
    snapshot_versions: int
    documents: int = 0


class AccountService:
    def __init__(
        self,
        memories: ExportableMemories,
        conversations: ConversationArchive,
        keyring: BranchKeyring,
        *,
        snapshots: SnapshotPurger | None = None,
        credentials: CredentialRevoker | None = None,
        generations: OwnerGenerations | None = None,
        on_forgotten: Callable[[str], None] | None = None,
        documents: ExportableDocuments | None = None,
        page_bytes: int = EXPORT_PAGE_BYTES,
        page_memories: int = EXPORT_PAGE_MEMORIES,
    ) -> None:
        """`on_forgotten` lets in-memory state of this container (a search index) drop the user;
        `generations` tells every other container's (pai_core.search.live). `page_bytes` and
        `page_memories` bound one page of the export."""
        if page_bytes < 1 or page_memories < 1:
            raise ValueError("an export page must have room for something")
        self._page_bytes = page_bytes
        self._page_memories = page_memories
        self._memories = memories
        self._generations = generations
        self._conversations = conversations
        self._keyring = keyring
        self._snapshots = snapshots
        self._credentials = credentials
        self._on_forgotten = on_forgotten
        self._documents = documents

    def export(self, owner: str) -> AccountExport:
        """The whole export at once, every page joined (for operators' tools; the API pages)."""
        memories: list[Memory] = []
        turns: list[tuple[str, Turn]] = []
        histories: dict[str, list[MemoryVersion]] = {}
        documents: list[tuple[Document, str]] = []
        cursor: str | None = None
        while True:
            page = self.export_page(owner, cursor=cursor)
            memories += page.memories
            turns += page.turns
            documents += page.documents
            histories.update(page.histories)
            if page.cursor is None:
                return AccountExport(memories=memories, turns=turns, histories=histories, documents=documents)
            cursor = page.cursor

    def export_page(self, owner: str, *, cursor: str | None) -> AccountExport:
        """One page of the export: from the start, or from where `cursor` (the previous page's)
        says. Memories come first (newest first, as listed), then documents, then conversation turns
        (oldest first). InvalidInput (field `cursor`) for a cursor this service did not make."""
        position = decode_export_cursor(cursor) if cursor is not None else MemoriesFrom(page=None, after=None)
        page = _PageBuilder(self._page_bytes)
        if isinstance(position, MemoriesFrom):
            rest = self._fill_with_memories(owner, position, page)
            if rest is not None:
                return page.build(encode_export_cursor(rest))
            position = DocumentsFrom(page=None, after=None)
        if isinstance(position, DocumentsFrom):
            rest_of_documents = self._fill_with_documents(owner, position, page)
            if rest_of_documents is not None:
                return page.build(encode_export_cursor(rest_of_documents))
            position = TurnsFrom(after=None)
        rest_of_turns = self._fill_with_turns(owner, position, page)
        return page.build(None if rest_of_turns is None else encode_export_cursor(rest_of_turns))

    def _fill_with_memories(self, owner: str, position: MemoriesFrom, page: _PageBuilder) -> MemoriesFrom | None:
        """Adds memories from `position` while they fit; where the next page starts, None when every memory is in."""
        list_cursor, after = position.page, position.after
        while True:
            listed = self._memories.page(owner, category=None, limit=_EXPORT_READ_BATCH, cursor=list_cursor)
            for memory in listed.items:
                if after is not None and memory.id >= after:  # exported already: the list is newest first
                    continue
                if len(page.memories) >= self._page_memories:
                    return MemoriesFrom(page=list_cursor, after=after)
                history = self._history(owner, memory)
                if history is None:  # deleted since it was listed
                    continue
                if not page.add_memory(memory, history):
                    return MemoriesFrom(page=list_cursor, after=after)
                after = memory.id
            if listed.cursor is None:
                return None
            list_cursor, after = listed.cursor, None

    def _fill_with_documents(self, owner: str, position: DocumentsFrom, page: _PageBuilder) -> DocumentsFrom | None:
        """Adds documents (with their text) from `position` while they fit; where the next page starts."""
        if self._documents is None:
            return None
        list_cursor, after = position.page, position.after
        while True:
            listed = self._documents.list_documents(owner, limit=_EXPORT_READ_BATCH, cursor=list_cursor)
            for document in listed.items:
                if after is not None and document.id >= after:  # exported already: the list is newest first
                    continue
                if not page.add_document(document, self._documents.text(owner, document.id)):
                    return DocumentsFrom(page=list_cursor, after=after)
                after = document.id
            if listed.cursor is None:
                return None
            list_cursor, after = listed.cursor, None

    def _history(self, owner: str, memory: Memory) -> list[MemoryVersion] | None:
        # A memory never updated has one version, itself: no read needed for it.
        if memory.updated_at is None:
            return [MemoryVersion.current(memory)]
        return self._memories.history(owner, memory.id)

    def _fill_with_turns(self, owner: str, position: TurnsFrom, page: _PageBuilder) -> TurnsFrom | None:
        """Adds turns past `position` while they fit; where the next page starts, None when every turn is in.

        Turns live 24 hours, so the archive reads them all for each page and the position is a
        turn's key (time, session) rather than a count: a turn that expires between two pages
        moves nothing else."""
        turns = sorted(self._conversations.all_turns(owner), key=_turn_key)
        after = position.after
        for session_turn in turns:
            key = _turn_key(session_turn)
            if after is not None and key <= after:
                continue
            if not page.add_turn(session_turn):
                return TurnsFrom(after=after)
            after = key
        return None

    def forget(self, owner: str) -> ForgetReport:
        """The generation moves first, then the key material goes.

        Generation first: from then on no container writes a snapshot of the user (each reads the
        generation just before writing and refuses, without asking the keyring) and every warm index
        of the user is dropped at its next search. A container that read the old generation just
        before the move either seals with a key that is destroyed next (unreadable), or finds no key
        (a snapshot never makes one), and takes its object back when it reads the generation after
        writing. Key material next: from that moment every copy of the user's data, here, in the
        bucket or in any backup, is unreadable, even if a later step fails. Every step can run
        again, so a failed forget is finished by forgetting again."""
        if self._generations is not None:
            self._generations.move_generation(owner)
        key_versions = self._keyring.destroy(owner)
        api_keys = self._credentials.revoke_all(owner) if self._credentials is not None else 0
        memories = self._memories.purge(owner)
        turns = self._conversations.purge(owner)
        snapshot_versions = self._snapshots.purge(owner) if self._snapshots is not None else 0
        documents = self._documents.purge(owner) if self._documents is not None else 0
        if self._on_forgotten is not None:
            self._on_forgotten(owner)
        return ForgetReport(
            key_versions=key_versions,
            api_keys=api_keys,
            memories=memories,
            conversation_turns=turns,
            snapshot_versions=snapshot_versions,
            documents=documents,
        )


class _PageBuilder:
    def __init__(self, budget: int) -> None:
        self._budget = budget
        self.memories: list[Memory] = []
        self.histories: dict[str, list[MemoryVersion]] = {}
        self.turns: list[tuple[str, Turn]] = []
        self.documents: list[tuple[Document, str]] = []
        self._bytes = 0

    def add_memory(self, memory: Memory, history: list[MemoryVersion]) -> bool:
        """Adds the memory if it fits (or the page is empty); whether it did."""
        parts: list[Any] = [memory.content, memory.metadata, memory.source_session]
        parts += [[version.content, version.metadata, version.reason] for version in history]
        if not self._fits(_json_bytes(parts) + _ENTRY_OVERHEAD_BYTES * (1 + len(history))):
            return False
        self.memories.append(memory)
        self.histories[memory.id] = history
        return True

    def add_document(self, document: Document, text: str) -> bool:
        if not self._fits(_json_bytes([document.name, text]) + _ENTRY_OVERHEAD_BYTES):
            return False
        self.documents.append((document, text))
        return True

    def add_turn(self, session_turn: tuple[str, Turn]) -> bool:
        session_id, turn = session_turn
        if not self._fits(_json_bytes([session_id, turn.content]) + _ENTRY_OVERHEAD_BYTES):
            return False
        self.turns.append(session_turn)
        return True

    def _fits(self, size: int) -> bool:
        empty = not self.memories and not self.turns and not self.documents
        if not empty and self._bytes + size > self._budget:
            return False
        self._bytes += size
        return True

    def build(self, cursor: str | None) -> AccountExport:
        return AccountExport(
            memories=self.memories, turns=self.turns, histories=self.histories, cursor=cursor, documents=self.documents
        )


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _turn_key(session_turn: tuple[str, Turn]) -> tuple[int, str]:
    """A turn's place in the export: its time in whole microseconds (as the conversations table
    keys it, with no float rounding), then its session (which has one turn per moment)."""
    session_id, turn = session_turn
    return (turn.at - _EPOCH) // timedelta(microseconds=1), session_id


# -- export cursors ----------------------------------------------------------------------------------
#
# Where the next page starts, as unpadded URL-safe base64 of compact JSON, like the list's cursors:
# `{"m": <the list cursor of the memories' page holding the next one, or null for the first>,
# "a": <the id of the last memory exported, or null>}` while memories remain, then `{"d", "b"}` likewise for
# documents (the document list's cursor, the last document exported), then `{"t": null}` or
# `{"t": [<microseconds>, <sessionId>]}` (the last turn exported). The list cursor inside is the
# memory store's own and is checked by it when used. Anything else is refused before anything is read.


@dataclass(frozen=True)
class MemoriesFrom:
    page: str | None
    after: str | None


@dataclass(frozen=True)
class DocumentsFrom:
    page: str | None
    after: str | None


@dataclass(frozen=True)
class TurnsFrom:
    after: tuple[int, str] | None


ExportPosition = MemoriesFrom | DocumentsFrom | TurnsFrom
_NOT_OURS = "cursor is not one this API returned"
_MEMORY_ID = re.compile(f"[0-9a-f]{{{ID_HEX_CHARS}}}")
_MAX_NESTED_CHARS = 1024
_MAX_MICROS = 2**63 - 1


def encode_export_cursor(position: ExportPosition) -> str:
    fields: dict[str, Any]
    if isinstance(position, MemoriesFrom):
        fields = {"m": position.page, "a": position.after}
    elif isinstance(position, DocumentsFrom):
        fields = {"d": position.page, "b": position.after}
    else:
        fields = {"t": None if position.after is None else list(position.after)}
    raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_export_cursor(cursor: str) -> ExportPosition:
    """The position a cursor of ours holds; InvalidInput (field `cursor`) for anything else."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        fields = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):  # not base64, not UTF-8, not JSON
        raise InvalidInput(_NOT_OURS, field="cursor") from None
    position = _position_of(fields)
    # Only the exact text encode_export_cursor makes: no padding, no whitespace, no duplicate keys.
    if position is None or encode_export_cursor(position) != cursor:
        raise InvalidInput(_NOT_OURS, field="cursor")
    return position


def _position_of(fields: object) -> ExportPosition | None:
    if isinstance(fields, dict) and set(fields) == {"m", "a"}:
        page, after = fields["m"], fields["a"]
        page_ok = page is None or (isinstance(page, str) and 0 < len(page) <= _MAX_NESTED_CHARS)
        after_ok = after is None or (isinstance(after, str) and _MEMORY_ID.fullmatch(after) is not None)
        return MemoriesFrom(page=page, after=after) if page_ok and after_ok else None
    if isinstance(fields, dict) and set(fields) == {"d", "b"}:
        page, after = fields["d"], fields["b"]
        page_ok = page is None or (isinstance(page, str) and 0 < len(page) <= _MAX_NESTED_CHARS)
        after_ok = after is None or (isinstance(after, str) and _MEMORY_ID.fullmatch(after) is not None)
        return DocumentsFrom(page=page, after=after) if page_ok and after_ok else None
    if isinstance(fields, dict) and set(fields) == {"t"}:
        after_turn = fields["t"]
        if after_turn is None:
            return TurnsFrom(after=None)
        return TurnsFrom(after=(after_turn[0], after_turn[1])) if _is_turn_key(after_turn) else None
    return None


def _is_turn_key(value: object) -> bool:
    if not isinstance(value, list) or len(value) != 2:
        return False
    micros, session_id = value
    micros_ok = not isinstance(micros, bool) and isinstance(micros, int) and 0 <= micros <= _MAX_MICROS
    return micros_ok and isinstance(session_id, str) and 0 < len(session_id) <= _MAX_NESTED_CHARS
