"""Use cases of the knowledge base: upload (with duplicate detection), list, get, delete a document;
ingest an upload accepted for reading off the request path; its extracted text (export); forgetting
every document of a user.

An upload is read (in a bounded child process: pai_core.documents.worker) and split into passages in
the request, so a file that cannot be read is refused (422) at once and stores nothing. Then, two paths:

- at most `inline_max_passages` passages (the common case): embedded and stored in the request; the
  document is "ready" when the answer (201) leaves.
- more (a text-dense book): embedding them all would not fit in the request's time, so the sealed
  original and a "processing" document are stored, a reference (owner, document id) is queued, and the
  answer (202) leaves at once; the ingest function (`ingest`) reads the original again, embeds the
  passages in batches, stores them and marks the document "ready", or "failed" with the reason and
  none of its passages kept. Reading again costs a small share of the embedding's time and keeps the
  queue and the bucket free of anything but the sealed original.

Without an ingestion queue (none configured) every upload takes the first path, and one that could
not finish in its request's time is refused (413). The original file and its
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
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from pai_core.deadline import remaining_seconds
from pai_core.documents.chunk import Passage as Piece
from pai_core.documents.chunk import TokenSpans, split_passages
from pai_core.documents.detect import CONTENT_TYPES, ContentType, decide_type
from pai_core.documents.jobs import IngestJob, IngestQueue
from pai_core.documents.parse import ParsedDocument
from pai_core.documents.records import Document, DocumentPage, DocumentTotals, StoredPassage
from pai_core.documents.worker import WorkerBounds, parse_bounded
from pai_core.errors import (
    NotFound,
    PaiError,
    PayloadTooLarge,
    QuotaExceeded,
    UnreadableDocument,
    UpstreamUnavailable,
)
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
# The most passages an upload embeds in its own request when an ingestion queue is configured; more
# go to the ingest function. Chosen so the slowest embedding pace seen here for the int8 model, plus
# reading and storing, stays well inside the documents function's 29 s (see README, "documents").
INLINE_MAX_PASSAGES = 200

IngestOutcome = Literal["ready", "failed", "gone", "done"]


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

    def add_processing(self, owner: str, document: Document, *, fingerprint: str) -> None: ...

    def put_passages(self, owner: str, passages: Sequence[tuple[StoredPassage, bytes]]) -> None: ...

    def mark_ready(self, owner: str, document_id: str, passage_ids: Sequence[str]) -> bool: ...

    def announce(self, owner: str, passage_ids: Sequence[str]) -> None: ...

    def mark_failed(self, owner: str, document_id: str, reason: str) -> bool: ...

    def remove_passages(self, owner: str, document_id: str) -> int: ...


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
        queue: IngestQueue | None = None,
        inline_max_passages: int = INLINE_MAX_PASSAGES,
    ) -> None:
        """`spans`: the embedder's tokenizer (token character spans, no truncation) for passage
        sizes; `fingerprint(owner, bytes)`: the keyed hash that recognizes a file uploaded again;
        `queue`: where uploads of more than `inline_max_passages` passages go to be ingested (None:
        every upload is ingested in its request)."""
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
        self._queue = queue
        self.inline_max_passages = inline_max_passages
        self._new_id = MemoryIds()

    def upload(self, owner: str, *, name: str, content_type: str, content: bytes, category: str) -> Upload:
        bounds = self.bounds
        if len(content) > bounds.max_file_bytes:
            raise PayloadTooLarge(f"a document is at most {bounds.max_file_bytes // MIB} MiB")
        chosen = decide_type(content_type, content)
        fingerprint = self._fingerprint(owner, content)
        existing = self._repository.by_fingerprint(owner, fingerprint)
        if existing is not None:
            if existing.status != "failed":
                return Upload(existing, duplicate=True)
            # The same bytes again after an ingestion that failed: tried afresh, in place of the failure.
            self._repository.delete(owner, existing.id)
        totals = self._repository.totals(owner)
        if totals.documents >= bounds.max_documents:
            raise QuotaExceeded(f"you hold {bounds.max_documents} documents, the most one user may: delete some first")
        if totals.bytes + len(content) > bounds.max_total_bytes:
            raise PayloadTooLarge(
                f"your documents would take more than {bounds.max_total_bytes // MIB} MiB: delete some first"
            )
        parsed = self._parser(content, chosen)
        pieces = self._pieces(parsed)
        if totals.passages + len(pieces) > bounds.max_passages:
            raise QuotaExceeded(
                f"your documents would make more than {bounds.max_passages} passages: delete some first"
            )
        created_at = self._clock.now()
        document = Document(
            id=self._new_id(created_at),
            name=name,
            content_type=chosen,
            category=category,
            bytes=len(content),
            pages=parsed.pages,
            passages=len(pieces),
            created_at=created_at.replace(microsecond=created_at.microsecond // 1000 * 1000),
        )
        if self._queue is not None and len(pieces) > self.inline_max_passages:
            return Upload(self._accept(owner, document, content, fingerprint, self._queue), duplicate=False)
        passages = self._passages(document, pieces, self._embed([piece.text for piece in pieces]))
        try:
            self._files.put(owner, document.id, "original", content)
            self._files.put(owner, document.id, "text", parsed.text.encode("utf-8"))
            self._repository.add(owner, document, passages, fingerprint=fingerprint)
        except PaiError:
            self._abandon(owner, document.id)
            raise
        self._index_passages(owner, passages)
        return Upload(document, duplicate=False)

    def _pieces(self, parsed: ParsedDocument) -> list[Piece]:
        pieces = split_passages(parsed.blocks, self._spans)
        if not pieces:
            raise UnreadableDocument("the document has no extractable text")
        if len(pieces) > self.bounds.max_passages_per_document:
            raise UnreadableDocument(f"the document makes more than {self.bounds.max_passages_per_document} passages")
        return pieces

    @staticmethod
    def _passages(
        document: Document, pieces: Sequence[Piece], embeddings: np.ndarray
    ) -> list[tuple[StoredPassage, bytes]]:
        return [
            (
                StoredPassage(
                    id=f"{document.id}#{number:05d}",
                    document_id=document.id,
                    text=piece.text,
                    page=piece.page,
                    heading=piece.heading,
                    category=document.category,
                ),
                embeddings[number].tobytes(),
            )
            for number, piece in enumerate(pieces)
        ]

    def _index_passages(self, owner: str, passages: Sequence[tuple[StoredPassage, bytes]]) -> None:
        if self._index is not None:
            for passage, vector in passages:
                item = IndexedItem(
                    ItemRef("passage", passage.id), category=passage.category, vector=vector, text=passage.text
                )
                self._index.put(owner, item)

    def _accept(self, owner: str, document: Document, content: bytes, fingerprint: str, queue: IngestQueue) -> Document:
        """The sealed original and a processing document, then the job; undone when any of it fails."""
        accepted = replace(document, status="processing")
        try:
            self._files.put(owner, document.id, "original", content)
            self._repository.add_processing(owner, accepted, fingerprint=fingerprint)
            queue.send(IngestJob(owner, document.id))
        except PaiError:
            try:
                self._repository.delete(owner, document.id)
            except PaiError:
                log.warning("a document whose ingestion was not queued was not removed: a forget removes it")
            self._abandon(owner, document.id)
            raise
        return accepted

    def ingest(self, job: IngestJob) -> IngestOutcome:
        """Reads an accepted upload (its sealed original), embeds and stores its passages and marks it
        ready. Idempotent: a job for a document already ready or failed changes nothing (a ready one's
        passages are announced again, in case the first run stopped just before); one for a document
        deleted meanwhile removes whatever this ingestion wrote. UpstreamUnavailable (or any other
        error) leaves the document processing, for the job to be delivered again; a file that cannot
        be read fails the document at once (`fail`)."""
        owner, document_id = job.owner, job.document_id
        document = self._repository.get(owner, document_id)
        if document is None:
            self._remove_ingested(owner, document_id)
            return "gone"
        if document.status == "failed":
            return "done"
        if document.status == "ready":
            self._repository.announce(owner, [f"{document_id}#{n:05d}" for n in range(document.passages)])
            return "done"
        return self._read_and_store(job, document)

    def _read_and_store(self, job: IngestJob, document: Document) -> IngestOutcome:
        owner, document_id = job.owner, job.document_id
        content = self._files.get(owner, document_id, "original")
        if content is None:
            return self.fail(job, "the uploaded file is no longer there: upload it again")
        try:
            parsed = self._parser(content, _content_type(document.content_type))
            pieces = self._pieces(parsed)
        except UnreadableDocument as exc:
            return self.fail(job, exc.message)
        passages = self._passages(document, pieces, self._embed([piece.text for piece in pieces], in_request=False))
        if self._repository.get(owner, document_id) is None:  # deleted (or forgotten) while it was embedded
            self._remove_ingested(owner, document_id)
            return "gone"
        self._files.put(owner, document_id, "text", parsed.text.encode("utf-8"))
        self._repository.put_passages(owner, passages)
        if self._repository.mark_ready(owner, document_id, [p.id for p, _ in passages]):
            self._index_passages(owner, passages)
            return "ready"
        if self._repository.get(owner, document_id) is None:  # deleted while it was read: the delete wins
            self._remove_ingested(owner, document_id)
            return "gone"
        return "done"  # finished (or failed) by another delivery of the same job

    def fail(self, job: IngestJob, reason: str) -> IngestOutcome:
        """The document turns failed with `reason`, keeping none of its passages or objects."""
        owner, document_id = job.owner, job.document_id
        marked = self._repository.mark_failed(owner, document_id, reason)
        self._repository.remove_passages(owner, document_id)
        self._abandon(owner, document_id)
        return "failed" if marked else "gone" if self._repository.get(owner, document_id) is None else "done"

    def _remove_ingested(self, owner: str, document_id: str) -> None:
        self._repository.remove_passages(owner, document_id)
        self._abandon(owner, document_id)

    def _embed(self, texts: list[str], *, in_request: bool = True) -> np.ndarray:
        """In batches; as soon as the rest could not be embedded and stored in the time left (at the
        pace of the batches so far): PayloadTooLarge in a request, UpstreamUnavailable in an
        ingestion (delivered again, and failed at its last delivery)."""
        batches = []
        started = self._monotonic()
        for start in range(0, len(texts), EMBED_BATCH):
            remaining = remaining_seconds()
            if remaining is not None and start:
                per_text = (self._monotonic() - started) / start
                if remaining < per_text * (len(texts) - start) + STORE_SECONDS:
                    if not in_request:
                        raise UpstreamUnavailable("the document could not be read in the ingest function's time")
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
        if self._index is not None and document.status == "ready":
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


def _content_type(stored: str) -> ContentType:
    """A stored document's content type, decided by PAI at upload (so one of CONTENT_TYPES)."""
    if stored not in CONTENT_TYPES:
        raise UnreadableDocument("the document's type is not one PAI reads")
    return stored
