"""Use cases of the knowledge base: upload (with duplicate detection), list, get, delete a document;
its extracted text (export); forgetting every document of a user.

An upload is read (in a bounded child process: pai_core.documents.worker), split into passages,
embedded, and only then stored: a file that cannot be read stores nothing. The original file and its
text go to the bucket sealed; passages go to the table sealed, and into this container's search
index at once (every other container's through the change log).

Per-user bounds (DocumentBounds), checked before anything is stored: a file over `max_file_bytes`
or one that would take the user's stored bytes past `max_total_bytes` is too large (413); one past
`max_documents` documents or `max_passages` passages is over the user's quota (429, until they delete
something). The totals are read before and added to after an upload, so two concurrent uploads can
each pass the check and together overshoot by one document; the next upload is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from pai_core.deadline import remaining_seconds
from pai_core.documents.chunk import TokenSpans, split_passages
from pai_core.documents.detect import ContentType, decide_type
from pai_core.documents.parse import ParsedDocument
from pai_core.documents.records import Document, DocumentPage, DocumentTotals, StoredPassage
from pai_core.documents.worker import WorkerBounds, parse_bounded
from pai_core.errors import NotFound, PaiError, PayloadTooLarge, QuotaExceeded, UnreadableDocument
from pai_core.ids import MemoryIds
from pai_core.models import VECTOR_DTYPE, IndexedItem, ItemRef
from pai_core.ports import Clock, Embedder, MemorySearchIndex

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Passages embedded per call; between calls, an upload that could not finish in its request's time
# is refused (413) before anything is stored, rather than cut off by the function's timeout.
EMBED_BATCH = 64
# What storing a document takes after its passages are embedded (S3, table, change log), kept back.
STORE_SECONDS = 4.0


@dataclass(frozen=True)
class DocumentBounds:
    max_file_bytes: int = 4 * MIB
    max_documents: int = 1_000
    max_total_bytes: int = 512 * MIB
    max_passages: int = 50_000
    max_passages_per_document: int = 10_000


class DocumentRepository(Protocol):
    def add(
        self, owner: str, document: Document, passages: Sequence[tuple[StoredPassage, bytes]], *, fingerprint: str
    ) -> None: ...

    def delete(self, owner: str, document_id: str) -> Document | None: ...

    def get(self, owner: str, document_id: str) -> Document | None: ...

    def by_fingerprint(self, owner: str, fingerprint: str) -> Document | None: ...

    def totals(self, owner: str) -> DocumentTotals: ...

    def page(self, owner: str, *, limit: int, cursor: str | None) -> DocumentPage: ...

    def documents_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, Document]: ...

    def passages_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, StoredPassage]: ...

    def purge(self, owner: str) -> int: ...


class DocumentFiles(Protocol):
    def put(self, owner: str, document_id: str, purpose: Literal["original", "text"], payload: bytes) -> None: ...

    def get(self, owner: str, document_id: str, purpose: Literal["original", "text"]) -> bytes | None: ...

    def delete(self, owner: str, document_id: str) -> int: ...

    def purge(self, owner: str) -> int: ...


Parser = Callable[[bytes, ContentType], ParsedDocument]
Fingerprint = Callable[[str, bytes], str]


@dataclass(frozen=True)
class Upload:
    document: Document
    duplicate: bool


def _default_parser(content: bytes, content_type: ContentType) -> ParsedDocument:
    bounds = WorkerBounds()
    remaining = remaining_seconds()
    if remaining is not None:  # the parser's time comes out of the request's, leaving room to embed
        bounds = WorkerBounds(timeout_seconds=max(1.0, min(bounds.timeout_seconds, remaining / 2)))
    return parse_bounded(content, content_type, bounds=bounds)


class DocumentService:
    def __init__(
        self,
        repository: DocumentRepository,
        files: DocumentFiles,
        embedder: Embedder,
        clock: Clock,
        *,
        spans: TokenSpans,
        fingerprint: Fingerprint,
        index: MemorySearchIndex | None = None,
        bounds: DocumentBounds | None = None,
        parser: Parser = _default_parser,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`spans`: the embedder's tokenizer (token character spans, no truncation) for passage
        sizes; `fingerprint(owner, bytes)`: the keyed hash that recognizes a file uploaded again."""
        self._repository = repository
        self._files = files
        self._embedder = embedder
        self._clock = clock
        self._spans = spans
        self._fingerprint = fingerprint
        self._index = index
        self.bounds = bounds or DocumentBounds()
        self._parser = parser
        self._monotonic = monotonic
        self._new_id = MemoryIds()

    def upload(self, owner: str, *, name: str, content_type: str, content: bytes, category: str) -> Upload:
        bounds = self.bounds
        if len(content) > bounds.max_file_bytes:
            raise PayloadTooLarge(f"a document is at most {bounds.max_file_bytes // MIB} MiB")
        chosen = decide_type(content_type, content)
        fingerprint = self._fingerprint(owner, content)
        existing = self._repository.by_fingerprint(owner, fingerprint)
        if existing is not None:
            return Upload(existing, duplicate=True)
        totals = self._repository.totals(owner)
        if totals.documents >= bounds.max_documents:
            raise QuotaExceeded(f"you hold {bounds.max_documents} documents, the most one user may: delete some first")
        if totals.bytes + len(content) > bounds.max_total_bytes:
            raise PayloadTooLarge(
                f"your documents would take more than {bounds.max_total_bytes // MIB} MiB: delete some first"
            )
        parsed = self._parser(content, chosen)
        pieces = split_passages(parsed.blocks, self._spans)
        if not pieces:
            raise UnreadableDocument("the document has no extractable text")
        if len(pieces) > bounds.max_passages_per_document:
            raise UnreadableDocument(f"the document makes more than {bounds.max_passages_per_document} passages")
        if totals.passages + len(pieces) > bounds.max_passages:
            raise QuotaExceeded(
                f"your documents would make more than {bounds.max_passages} passages: delete some first"
            )
        embeddings = self._embed([piece.text for piece in pieces])
        created_at = self._clock.now()
        document_id = self._new_id(created_at)
        document = Document(
            id=document_id,
            name=name,
            content_type=chosen,
            category=category,
            bytes=len(content),
            pages=parsed.pages,
            passages=len(pieces),
            created_at=created_at.replace(microsecond=created_at.microsecond // 1000 * 1000),
        )
        passages = [
            (
                StoredPassage(
                    id=f"{document_id}#{number:05d}",
                    document_id=document_id,
                    text=piece.text,
                    page=piece.page,
                    heading=piece.heading,
                    category=category,
                ),
                embeddings[number].tobytes(),
            )
            for number, piece in enumerate(pieces)
        ]
        try:
            self._files.put(owner, document_id, "original", content)
            self._files.put(owner, document_id, "text", parsed.text.encode("utf-8"))
            self._repository.add(owner, document, passages, fingerprint=fingerprint)
        except PaiError:
            self._abandon(owner, document_id)
            raise
        if self._index is not None:
            for passage, vector in passages:
                item = IndexedItem(ItemRef("passage", passage.id), category=category, vector=vector, text=passage.text)
                self._index.put(owner, item)
        return Upload(document, duplicate=False)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """In batches; PayloadTooLarge as soon as the rest could not be embedded and stored in the
        request's time left (at the pace of the batches so far)."""
        batches = []
        started = self._monotonic()
        for start in range(0, len(texts), EMBED_BATCH):
            remaining = remaining_seconds()
            if remaining is not None and start:
                per_text = (self._monotonic() - started) / start
                if remaining < per_text * (len(texts) - start) + STORE_SECONDS:
                    raise PayloadTooLarge(
                        f"the document makes {len(texts)} passages, more than can be read in one request: split it"
                    )
            batches.append(np.asarray(self._embedder.embed(texts[start : start + EMBED_BATCH]), dtype=VECTOR_DTYPE))
        return np.concatenate(batches)

    def _abandon(self, owner: str, document_id: str) -> None:
        try:
            self._files.delete(owner, document_id)
        except PaiError:
            log.warning("objects of an upload that failed were not deleted: a forget removes them")

    def get(self, owner: str, document_id: str) -> Document:
        document = self._repository.get(owner, document_id)
        if document is None:
            raise NotFound("no such document")
        return document

    def list_documents(self, owner: str, *, limit: int, cursor: str | None) -> DocumentPage:
        return self._repository.page(owner, limit=limit, cursor=cursor)

    def delete(self, owner: str, document_id: str) -> None:
        """The document, its passages (for search and chat in every container, through the change
        log) and every version of its objects in the bucket."""
        document = self._repository.delete(owner, document_id)
        if document is None:
            raise NotFound("no such document")
        if self._index is not None:
            for number in range(document.passages):
                self._index.removed(owner, ItemRef("passage", f"{document_id}#{number:05d}"))
        self._files.delete(owner, document_id)

    def text(self, owner: str, document_id: str) -> str:
        """The text read from the document when it was uploaded ("" if its object is gone)."""
        payload = self._files.get(owner, document_id, "text")
        return "" if payload is None else payload.decode("utf-8")

    def purge(self, owner: str) -> int:
        """Every document of the owner, in the table and the bucket; how many documents."""
        self._files.purge(owner)
        return self._repository.purge(owner)
