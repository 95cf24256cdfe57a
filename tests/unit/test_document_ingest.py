"""Documents read off the request path: which uploads go to the ingest function (202 processing),
the ingest function's outcomes (ready, failed with nothing kept, a delete while processing wins,
idempotent redelivery) and its handler's retries, against in-memory fakes."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from handlers import document_ingest
from handlers import documents as documents_handler
from pai_core.documents import parse_document
from pai_core.documents.detect import ContentType
from pai_core.documents.jobs import IngestJob, InvalidIngestJob
from pai_core.documents.parse import ParsedDocument
from pai_core.errors import UnreadableDocument, UpstreamUnavailable
from pai_core.services.documents import DocumentService
from pai_core.services.retrieval import PassageHit, RetrievalService
from tests.fakes import FakeContainer, FakeLambdaContext, FixedClock, HashingEmbedder, InMemoryMemoryRepository
from tests.fakes_documents import (
    InMemoryDocumentFiles,
    InMemoryDocumentRepository,
    ScanningIndex,
    fake_fingerprint,
    word_spans,
)
from tests.unit.test_handlers import invoke

# Three passages of 150 words each (word_spans: one token a word).
LONG = "\n\n".join(" ".join(f"w{p}x{i}" for i in range(150)) for p in range(3)).encode()
SHORT = b"The boat's hull is painted blue."


class ListQueue:
    def __init__(self) -> None:
        self.jobs: list[IngestJob] = []
        self.down = False

    def send(self, job: IngestJob) -> None:
        if self.down:
            raise UpstreamUnavailable("the document ingestion queue is unavailable")
        self.jobs.append(job)


def service(
    *, parser: Any = parse_document, embedder: Any = None, inline_max: int = 2
) -> tuple[DocumentService, InMemoryDocumentRepository, InMemoryDocumentFiles, ListQueue]:
    repository, files, queue = InMemoryDocumentRepository(), InMemoryDocumentFiles(), ListQueue()
    documents = DocumentService(
        repository,
        files,
        embedder or HashingEmbedder(),
        FixedClock(),
        spans=word_spans,
        fingerprint=fake_fingerprint,
        index=ScanningIndex([repository]),
        parser=parser,
        queue=queue,
        inline_max_passages=inline_max,
    )
    return documents, repository, files, queue


def test_the_job_is_a_reference_and_anything_else_is_not_a_job() -> None:
    job = IngestJob("alice", "0123456789abcdef0123456789abcdef")
    assert IngestJob.from_json(job.to_json()) == job
    assert "w0x1" not in job.to_json()
    for body in ["", "{}", '{"v":1,"owner":"a#b","documentId":"x"}', '{"v":1,"owner":"a","documentId":"../x"}', "[]"]:
        with pytest.raises(InvalidIngestJob):
            IngestJob.from_json(body)


def test_small_uploads_stay_in_the_request_and_larger_ones_are_queued_by_reference() -> None:
    documents, repository, files, queue = service()
    small = documents.upload("alice", name="s.txt", content_type="text/plain", content=SHORT, category="g")
    assert small.document.status == "ready" and queue.jobs == []
    large = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g")
    document = large.document
    assert document.status == "processing" and document.passages == 3 and not large.duplicate
    assert queue.jobs == [IngestJob("alice", document.id)]
    # Only the sealed original is stored; no passage yet, and the bounds count it at once.
    assert files.get("alice", document.id, "original") == LONG and files.get("alice", document.id, "text") is None
    assert [k for k in repository.passages if k[1].startswith(document.id)] == []
    assert repository.totals("alice").documents == 2
    # The same bytes again while it is read: the processing document, a duplicate.
    again = documents.upload("alice", name="l2.txt", content_type="text/plain", content=LONG, category="g")
    assert again.duplicate and again.document == document and len(queue.jobs) == 1


def test_without_a_queue_every_upload_is_read_in_its_request() -> None:
    repository, files = InMemoryDocumentRepository(), InMemoryDocumentFiles()
    documents = DocumentService(
        repository, files, HashingEmbedder(), FixedClock(), spans=word_spans, fingerprint=fake_fingerprint,
        parser=parse_document, inline_max_passages=1,
    )  # fmt: skip
    upload = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g")
    assert upload.document.status == "ready" and upload.document.passages == 3


def test_a_queue_that_is_down_stores_nothing() -> None:
    documents, repository, files, queue = service()
    queue.down = True
    with pytest.raises(UpstreamUnavailable):
        documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g")
    assert repository.documents == {} and repository.prints == {} and files.objects == {}


def test_ingest_makes_the_document_ready_and_searchable_once() -> None:
    documents, repository, _files, queue = service()
    retrieval = RetrievalService(InMemoryMemoryRepository(), repository, HashingEmbedder(), ScanningIndex([repository]))
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    assert retrieval.search("alice", "w1x5 w1x6 w1x7", top=5) == []
    assert documents.ingest(queue.jobs[0]) == "ready"
    ready = documents.get("alice", document.id)
    assert ready.status == "ready" and ready.passages == 3 and ready.failure is None
    assert repository.announced == [("alice", f"{document.id}#{n:05d}") for n in range(3)]
    assert "w2x149" in documents.text("alice", document.id)
    hits = retrieval.search("alice", "w1x5 w1x6 w1x7", top=1)
    assert isinstance(hits[0], PassageHit) and hits[0].document.id == document.id
    # A redelivered job finishes nothing twice: the same passages, announced again.
    assert documents.ingest(queue.jobs[0]) == "done"
    assert len([k for k in repository.passages if k[1].startswith(document.id)]) == 3
    assert repository.totals("alice").passages == 3


def test_a_passage_of_a_processing_document_is_never_a_hit() -> None:
    documents, repository, _, queue = service()
    retrieval = RetrievalService(InMemoryMemoryRepository(), repository, HashingEmbedder(), ScanningIndex([repository]))
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    # As if the ingest function had stored the passages and not yet marked the document ready.
    mark_ready = repository.mark_ready
    repository.mark_ready = lambda owner, document_id, ids: False  # type: ignore[method-assign,assignment]
    assert documents.ingest(queue.jobs[0]) == "done"
    assert len(repository.passages) == 3 and documents.get("alice", document.id).status == "processing"
    assert repository.all_items("alice") == [] and retrieval.search("alice", "w1x5 w1x6 w1x7", top=5) == []
    repository.mark_ready = mark_ready  # type: ignore[method-assign]
    assert documents.ingest(queue.jobs[0]) == "ready"
    assert retrieval.search("alice", "w1x5 w1x6 w1x7", top=1) != []


def test_an_unreadable_file_fails_the_document_and_keeps_nothing_of_it() -> None:
    calls: list[int] = []

    def parser(content: bytes, content_type: ContentType) -> ParsedDocument:
        calls.append(1)
        if len(calls) > 1:  # in the request it read; in the ingest function it does not
            raise UnreadableDocument("the PDF has no extractable text")
        return parse_document(content, content_type)

    documents, repository, files, queue = service(parser=parser)
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    assert documents.ingest(queue.jobs[0]) == "failed"
    failed = documents.get("alice", document.id)
    assert failed.status == "failed" and failed.failure == "the PDF has no extractable text" and failed.passages == 0
    assert repository.passages == {} and files.objects == {}
    assert repository.totals("alice").passages == 0
    assert documents.ingest(queue.jobs[0]) == "done"
    # The same bytes again replace the failed document (tried afresh) rather than answering with it.
    calls.clear()
    retry = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g")
    assert not retry.duplicate and retry.document.id != document.id and retry.document.status == "processing"
    assert [d.id for d in documents.list_documents("alice", limit=10, cursor=None).items] == [retry.document.id]


def test_an_embedding_failure_leaves_it_processing_for_another_delivery() -> None:
    class Flaky(HashingEmbedder):
        broken = False

        def embed(self, texts: Sequence[str]) -> Any:
            if self.broken:
                raise UpstreamUnavailable("model down")
            return super().embed(texts)

    embedder = Flaky()
    documents, _repository, _, queue = service(embedder=embedder)
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    embedder.broken = True
    with pytest.raises(UpstreamUnavailable):
        documents.ingest(queue.jobs[0])
    assert documents.get("alice", document.id).status == "processing"
    embedder.broken = False
    assert documents.ingest(queue.jobs[0]) == "ready"


def test_a_delete_while_processing_wins() -> None:
    documents, repository, files, queue = service()
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    documents.delete("alice", document.id)
    assert documents.ingest(queue.jobs[0]) == "gone"
    assert repository.passages == {} and files.objects == {} and repository.totals("alice").passages == 0

    # Deleted in the middle of the ingestion (after its passages were put, before it is marked ready).
    documents, repository, files, queue = service()
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    put_passages = repository.put_passages

    def put_then_deleted(owner: str, passages: Any) -> None:
        put_passages(owner, passages)
        documents.delete(owner, document.id)

    repository.put_passages = put_then_deleted  # type: ignore[method-assign]
    assert documents.ingest(queue.jobs[0]) == "gone"
    assert repository.passages == {} and files.objects == {} and repository.documents == {}
    assert repository.announced == []


def test_a_delete_while_embedding_writes_no_passage() -> None:
    deleting: list[Any] = []

    class DeletesMidway(HashingEmbedder):
        def embed(self, texts: Sequence[str]) -> Any:
            for delete in deleting:
                delete()
            return super().embed(texts)

    documents, repository, files, queue = service(embedder=DeletesMidway())
    document = documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g").document
    deleting.append(lambda: documents.delete("alice", document.id))
    written: list[Any] = []
    repository.put_passages = lambda owner, passages: written.append(passages)  # type: ignore[method-assign,assignment]
    assert documents.ingest(queue.jobs[0]) == "gone"
    assert written == [] and files.objects == {} and repository.documents == {}


# -- the handler ------------------------------------------------------------------------------------


def record(job: IngestJob | str, *, receives: int = 1, message_id: str = "m1") -> dict[str, Any]:
    body = job if isinstance(job, str) else job.to_json()
    return {"messageId": message_id, "body": body, "attributes": {"ApproximateReceiveCount": str(receives)}}


def test_the_handler_retries_then_fails_the_document_at_the_last_attempt(fake_container: FakeContainer) -> None:
    documents = fake_container.documents
    queue = ListQueue()
    documents._queue = queue
    documents.inline_max_passages = 2
    content = base64.b64encode(LONG).decode()
    body = {"action": "upload", "name": "l.txt", "contentType": "text/plain", "content": content}
    accepted = invoke(documents_handler, "POST /documents", body)
    assert accepted.status == 202 and accepted.body["status"] == "processing" and "failure" not in accepted.body
    job = queue.jobs[0]

    def broken(job: IngestJob) -> str:
        raise UpstreamUnavailable("model down")

    real_ingest = documents.ingest
    documents.ingest = broken  # type: ignore[method-assign]
    event = {"Records": [record(job), record("not a job", message_id="m2")]}
    assert document_ingest.handler(event, FakeLambdaContext()) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert documents.get(job.owner, job.document_id).status == "processing"
    last = {"Records": [record(job, receives=fake_container.settings.documents_ingest_attempts)]}
    assert document_ingest.handler(last, FakeLambdaContext()) == {"batchItemFailures": []}
    failed = documents.get(job.owner, job.document_id)
    assert failed.status == "failed" and failed.failure == document_ingest.GAVE_UP
    documents.ingest = real_ingest  # type: ignore[method-assign]
    got = invoke(documents_handler, "POST /documents", {"action": "get", "id": job.document_id})
    assert got.body["status"] == "failed" and got.body["failure"] == document_ingest.GAVE_UP


def test_the_handler_makes_a_queued_document_ready(fake_container: FakeContainer) -> None:
    documents = fake_container.documents
    queue = ListQueue()
    documents._queue = queue
    documents.inline_max_passages = 2
    documents.upload("alice", name="l.txt", content_type="text/plain", content=LONG, category="g")
    assert document_ingest.handler({"Records": [record(queue.jobs[0])]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert documents.get("alice", queue.jobs[0].document_id).status == "ready"


def test_the_threshold_and_the_queue_come_from_the_environment() -> None:
    from pai_core.config import Settings
    from pai_core.services.documents import INLINE_MAX_PASSAGES

    default = Settings.from_env({})
    assert default.documents_inline_max_passages == INLINE_MAX_PASSAGES and default.documents_queue_url is None
    assert default.documents_ingest_attempts == 3
    lowered = Settings.from_env(
        {"PAI_DOCUMENTS_INLINE_MAX_PASSAGES": "5", "PAI_DOCUMENTS_QUEUE_URL": "http://127.0.0.1:1/q"}
    )
    assert lowered.documents_inline_max_passages == 5 and lowered.documents_queue_url == "http://127.0.0.1:1/q"


def test_a_documents_status_and_failure_survive_the_table() -> None:
    from datetime import UTC, datetime

    from pai_core.adapters.document_codec import document_from_item, document_item
    from pai_core.documents.records import Document
    from tests.fakes import fake_cipher

    cipher = fake_cipher()
    base = Document("0" * 32, "a.pdf", "application/pdf", "g", 10, 3, 0, datetime(2026, 1, 1, tzinfo=UTC))
    for document in (base, replace(base, status="processing"), replace(base, status="failed", failure="why")):
        item = document_item(cipher, "t", "alice", document, fingerprint="f")
        assert ("status" in item) == (document.status != "ready")
        assert document_from_item(cipher, "t", "alice", item) == document
