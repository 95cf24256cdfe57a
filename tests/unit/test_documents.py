"""Documents: type detection, parsing of every format, every bad input, passage splitting, and the
service's duplicates, bounds and deletes (against in-memory fakes)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from handlers import documents as documents_handler
from pai_core.documents import Block, decide_type, parse_bounded, parse_document, split_passages
from pai_core.documents.detect import DOCX
from pai_core.errors import NotFound, PayloadTooLarge, QuotaExceeded, UnreadableDocument, UnsupportedMediaType
from pai_core.models import VECTOR_DTYPE
from pai_core.services.documents import DocumentBounds, DocumentService
from pai_core.services.retrieval import PassageHit, RetrievalService
from tests.documents_support import (
    bad_files,
    make_docx,
    make_pdf,
    pdf_with_inflating_stream,
)
from tests.fakes import FakeContainer, FixedClock, HashingEmbedder, InMemoryMemoryRepository
from tests.fakes_documents import (
    InMemoryDocumentFiles,
    InMemoryDocumentRepository,
    ScanningIndex,
    fake_fingerprint,
    word_spans,
)
from tests.unit.test_handlers import Reply, chat, invoke

# -- detection -----------------------------------------------------------------------------------


def test_declared_type_outside_the_five_is_unsupported() -> None:
    for declared in ("image/png", "application/zip", "text/csv", ""):
        with pytest.raises(UnsupportedMediaType):
            decide_type(declared, b"hello")


def test_bytes_must_be_what_the_declared_type_says() -> None:
    pdf = make_pdf([["hello"]])
    docx = make_docx([("hello", None)])
    assert decide_type("application/pdf", pdf) == "application/pdf"
    assert decide_type(DOCX, docx) == DOCX
    assert decide_type("text/markdown; charset=utf-8", b"# hi") == "text/markdown"
    with pytest.raises(UnreadableDocument, match="not a PDF"):
        decide_type("application/pdf", b"just text")
    with pytest.raises(UnreadableDocument, match="zip"):
        decide_type(DOCX, b"just text, not a zip")
    with pytest.raises(UnreadableDocument, match="a PDF"):
        decide_type("text/plain", pdf)
    with pytest.raises(UnreadableDocument, match="binary"):
        decide_type("text/html", b"\x00\x01\x02\xff\xfe binary")
    with pytest.raises(UnreadableDocument):
        decide_type("text/plain", b"\xff\xfe\xfa not utf-8 \xc3")


# -- parsing each format ---------------------------------------------------------------------------


def test_pdf_pages_are_numbered() -> None:
    parsed = parse_document(make_pdf([["The first page."], [], ["Third page here."]]), "application/pdf")
    assert parsed.pages == 3
    assert [(b.text, b.page) for b in parsed.blocks] == [("The first page.", 1), ("Third page here.", 3)]


def test_docx_headings_become_structure() -> None:
    content = make_docx(
        [("Garden", "Heading 1"), ("Tomatoes need sun.", None), ("Cellar", "Heading 2"), ("Wine.", None)]
    )
    parsed = parse_document(content, DOCX)
    assert parsed.pages is None
    body = [(b.text, b.heading) for b in parsed.blocks if not b.is_heading]
    assert body == [("Tomatoes need sun.", "Garden"), ("Wine.", "Cellar")]


def test_html_drops_scripts_and_styles_and_keeps_headings() -> None:
    html = b"""<html><head><title>Notes</title><style>p {color: red}</style>
    <script>var secret = "do not index";</script></head>
    <body><h2>Travel</h2><p>Passport renewal in <b>May</b>.</p><noscript>enable js</noscript>
    <div>Book the ferry.</div></body></html>"""
    parsed = parse_document(html, "text/html")
    text = parsed.text
    assert "do not index" not in text and "color" not in text and "enable js" not in text
    body = [(b.text, b.heading) for b in parsed.blocks if not b.is_heading]
    assert body == [("Passport renewal in May.", "Travel"), ("Book the ferry.", "Travel")]


def test_markdown_headings_atx_and_setext_outside_code_fences() -> None:
    md = b"# Recipes\n\nPancakes: flour, milk.\n\n```\n# not a heading\n```\n\nSoups\n-----\n\nLeek soup.\n"
    parsed = parse_document(md, "text/markdown")
    headings = [b.text for b in parsed.blocks if b.is_heading]
    assert headings == ["Recipes", "Soups"]
    body = {b.text: b.heading for b in parsed.blocks if not b.is_heading}
    assert body["Pancakes: flour, milk."] == "Recipes"
    assert body["```\n# not a heading\n```"] == "Recipes"
    assert body["Leek soup."] == "Soups"


def test_plain_text_paragraphs_and_a_utf16_file() -> None:
    parsed = parse_document("One.\n\n\nTwo\nlines.".encode("utf-16"), "text/plain")
    assert [b.text for b in parsed.blocks] == ["One.", "Two\nlines."]


# -- every bad input: 422 within bounds ------------------------------------------------------------

BAD_FILES = bad_files()


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_are_unreadable_in_the_bounded_worker(name: str) -> None:
    content, content_type, reason = BAD_FILES[name]
    with pytest.raises(UnreadableDocument, match=reason or None):
        parse_bounded(content, decide_type(content_type, content))


def test_a_stream_inflating_to_a_gigabyte_is_unreadable() -> None:
    content = pdf_with_inflating_stream(1024 * 1024 * 1024)
    assert len(content) < 2 * 1024 * 1024
    with pytest.raises(UnreadableDocument):
        parse_bounded(content, "application/pdf")


def test_the_worker_reads_a_good_file_like_the_parser() -> None:
    content = make_docx([("Title", "Heading 1"), ("Some words.", None)])
    assert parse_bounded(content, DOCX) == parse_document(content, DOCX)


# -- passages --------------------------------------------------------------------------------------


def test_passages_split_at_headings_and_pages_and_pack_short_paragraphs() -> None:
    blocks = [
        Block("Intro", 1, "Intro", is_heading=True),
        Block("a b c", 1, "Intro"),
        Block("d e", 1, "Intro"),
        Block("f g", 2, "Intro"),
        Block("Next", 2, "Next", is_heading=True),
        Block("h", 2, "Next"),
    ]
    passages = split_passages(blocks, word_spans, max_tokens=10, overlap=2)
    assert [(p.text, p.page, p.heading) for p in passages] == [
        ("a b c\n\nd e", 1, "Intro"),
        ("f g", 2, "Intro"),
        ("h", 2, "Next"),
    ]


def test_a_long_paragraph_is_cut_into_overlapping_windows() -> None:
    words = [f"w{i}" for i in range(25)]
    passages = split_passages([Block(" ".join(words), 4, "H")], word_spans, max_tokens=10, overlap=3)
    assert [p.text.split() for p in passages] == [words[0:10], words[7:17], words[14:24], words[21:25]]
    assert all(p.page == 4 and p.heading == "H" for p in passages)


# -- the service -----------------------------------------------------------------------------------


def service(
    bounds: DocumentBounds | None = None,
) -> tuple[DocumentService, InMemoryDocumentRepository, InMemoryDocumentFiles]:
    repository, files = InMemoryDocumentRepository(), InMemoryDocumentFiles()
    documents = DocumentService(
        repository,
        files,
        HashingEmbedder(),
        FixedClock(),
        spans=word_spans,
        fingerprint=fake_fingerprint,
        index=ScanningIndex([repository]),
        bounds=bounds,
        parser=parse_document,
    )
    return documents, repository, files


def test_upload_stores_original_text_and_passages_and_a_second_upload_is_a_duplicate() -> None:
    documents, repository, files = service()
    content = b"# Boat\n\nThe boat's hull is painted blue.\n\n# Car\n\nThe car is red."
    first = documents.upload("alice", name="notes.md", content_type="text/markdown", content=content, category="home")
    assert not first.duplicate
    assert first.document.passages == 2 and first.document.pages is None and first.document.bytes == len(content)
    assert files.get("alice", first.document.id, "original") == content
    assert "hull is painted blue" in documents.text("alice", first.document.id)
    again = documents.upload("alice", name="other.md", content_type="text/markdown", content=content, category="x")
    assert again.duplicate and again.document == first.document
    # Another user's identical file is theirs, not a duplicate of alice's.
    assert not documents.upload(
        "bob", name="n.md", content_type="text/markdown", content=content, category="a"
    ).duplicate
    assert repository.totals("alice").documents == 1


def test_search_finds_passages_with_their_document_and_not_after_delete() -> None:
    documents, repository, _ = service()
    memories = InMemoryMemoryRepository()
    retrieval = RetrievalService(memories, repository, HashingEmbedder(), ScanningIndex([repository]))
    pdf = make_pdf([["Cats sleep most of the day."], ["The mortgage is due on the first."]])
    uploaded = documents.upload("alice", name="a.pdf", content_type="application/pdf", content=pdf, category="general")
    hits = retrieval.search("alice", "mortgage is due on the first", top=1)
    assert len(hits) == 1 and isinstance(hits[0], PassageHit)
    assert hits[0].passage.page == 2 and hits[0].document.name == "a.pdf"
    assert retrieval.search("alice", "mortgage", top=5, sources=["memories"]) == []
    assert retrieval.search("bob", "mortgage", top=5) == []
    documents.delete("alice", uploaded.document.id)
    assert retrieval.search("alice", "mortgage is due on the first", top=5) == []
    with pytest.raises(NotFound):
        documents.get("alice", uploaded.document.id)
    with pytest.raises(NotFound):
        documents.delete("alice", uploaded.document.id)


def test_a_passage_left_behind_by_a_deleted_document_is_never_a_hit() -> None:
    documents, repository, _ = service()
    retrieval = RetrievalService(InMemoryMemoryRepository(), repository, HashingEmbedder(), ScanningIndex([repository]))
    uploaded = documents.upload("alice", name="a.txt", content_type="text/plain", content=b"orphan text", category="g")
    vector = np.asarray(HashingEmbedder().embed(["orphan text"])[0], dtype=VECTOR_DTYPE).tobytes()
    del repository.documents[("alice", uploaded.document.id)]  # as if a delete stopped after its first step
    assert ("alice", f"{uploaded.document.id}#00000") in repository.passages
    assert repository.all_items("alice") == [] and vector
    assert retrieval.search("alice", "orphan text", top=5) == []


def test_bounds_per_user() -> None:
    documents, _, _ = service(DocumentBounds(max_file_bytes=100, max_documents=1, max_total_bytes=150, max_passages=5))
    with pytest.raises(PayloadTooLarge):
        documents.upload("alice", name="big.txt", content_type="text/plain", content=b"x " * 51, category="g")
    documents.upload("alice", name="a.txt", content_type="text/plain", content=b"first file", category="g")
    with pytest.raises(QuotaExceeded):
        documents.upload("alice", name="b.txt", content_type="text/plain", content=b"second file", category="g")
    documents, _, _ = service(DocumentBounds(max_file_bytes=100, max_total_bytes=150))
    documents.upload("alice", name="a.txt", content_type="text/plain", content=b"a" * 100, category="g")
    with pytest.raises(PayloadTooLarge, match="MiB"):
        documents.upload("alice", name="b.txt", content_type="text/plain", content=b"b" * 60, category="g")
    documents, _, _ = service(DocumentBounds(max_passages=2))
    many = "\n\n".join(" ".join(f"w{p}x{i}" for i in range(150)) for p in range(3)).encode()
    with pytest.raises(QuotaExceeded, match="passages"):
        documents.upload("alice", name="c.txt", content_type="text/plain", content=many, category="g")


def test_nothing_is_stored_for_a_file_that_cannot_be_read() -> None:
    documents, repository, files = service()
    for content, content_type in [(b"%PDF-1.4 broken\n%%EOF", "application/pdf"), (b"not a zip", DOCX)]:
        with pytest.raises(UnreadableDocument):
            documents.upload("alice", name="x", content_type=content_type, content=content, category="g")
    assert repository.documents == {} and repository.passages == {} and files.objects == {}


def test_upload_content_is_base64_in_the_request() -> None:
    from pai_core.errors import InvalidInput
    from pai_core.requests import UploadDocument, parse_document_command

    body = {
        "action": "upload",
        "name": "a.txt",
        "contentType": "text/plain",
        "content": base64.b64encode(b"hi").decode(),
    }
    assert parse_document_command(body) == UploadDocument("a.txt", "text/plain", b"hi", "general")
    for bad in ("not base64!", "aGk", "aGk=\n"):
        with pytest.raises(InvalidInput) as caught:
            parse_document_command({**body, "content": bad})
        assert caught.value.field == "content"
    for name in ("a/b", "a\\b", "tab\there", "", "x" * 256):
        with pytest.raises(InvalidInput) as caught:
            parse_document_command({**body, "name": name})
        assert caught.value.field == "name"
    with pytest.raises(PayloadTooLarge):
        parse_document_command({**body, "content": base64.b64encode(b"x" * (4 * 1024 * 1024 + 30)).decode()})


def test_chat_cites_document_passages_and_quotes_them_as_data(fake_container: FakeContainer) -> None:
    content = b"# Boiler\n\nThe boiler service code is 4471 and the engineer is called Ada."
    fake_container.documents.upload(
        fake_container.settings.owner,
        name='manual "v2".md',
        content_type="text/markdown",
        content=content,
        category="home",
    )
    reply = chat({"message": "what is the boiler service code", "topK": 2})
    assert reply.status == 200, reply
    (source,) = [s for s in reply.body["sources"] if s["kind"] == "document"]
    assert source["name"] == 'manual "v2".md' and source["page"] is None
    assert source["id"].startswith(source["documentId"])
    assert set(source) == {"kind", "id", "score", "documentId", "name", "page"}
    system = fake_container.chat_model.prompts[-1][0].content
    assert "<document name=\"manual 'v2'.md\">The boiler service code is 4471" in system


def documents(body: Any) -> Reply:
    return invoke(documents_handler, "POST /documents", body)


def test_documents_route_statuses(fake_container: FakeContainer) -> None:
    good = {
        "action": "upload",
        "name": "a.txt",
        "contentType": "text/plain",
        "content": base64.b64encode(b"hi").decode(),
    }
    created = documents(good)
    assert created.status == 201 and created.body["name"] == "a.txt"
    duplicate = documents({**good, "name": "b.txt"})
    assert duplicate.status == 200 and duplicate.body == {**created.body, "duplicate": True}
    assert documents({**good, "content": "%%%"}).status == 400
    assert documents({**good, "contentType": "image/png"}).body["error"]["code"] == "unsupported_media_type"
    unreadable = documents({**good, "contentType": "application/pdf"})
    assert unreadable.status == 422 and unreadable.body["error"] == {
        "code": "unreadable_document",
        "message": "the content is not a PDF",
    }
    assert documents({"action": "get", "id": created.body["id"]}).body == created.body
    assert documents({"action": "get", "id": "0" * 32}).status == 404
    assert documents({"action": "list"}).body == {"items": [created.body], "cursor": None}
    assert documents({"action": "nope"}).status == 400
    # A body over 256 KiB is fine here (the route takes 6 MiB), and over 4 MiB decoded is a 413.
    big = base64.b64encode(b"word " * 100_000).decode()
    assert documents({**good, "name": "big.txt", "content": big}).status == 201
    huge = base64.b64encode(b"x" * (4 * 1024 * 1024 + 1)).decode()
    assert documents({**good, "content": huge}).status == 413
    assert documents({"action": "delete", "id": created.body["id"]}).body == {"id": created.body["id"], "deleted": True}
    assert documents({"action": "delete", "id": created.body["id"]}).status == 404


def test_an_upload_that_cannot_be_embedded_in_the_request_time_left_is_refused_before_storing() -> None:
    from pai_core.deadline import request_deadline

    now = [0.0]

    class SlowEmbedder(HashingEmbedder):
        def embed(self, texts: Sequence[str]) -> Any:
            now[0] += 1.0  # a second per batch, by the injected clock
            return super().embed(texts)

    repository, files = InMemoryDocumentRepository(), InMemoryDocumentFiles()
    documents = DocumentService(
        repository,
        files,
        SlowEmbedder(),
        FixedClock(),
        spans=word_spans,
        fingerprint=fake_fingerprint,
        parser=parse_document,
        monotonic=lambda: now[0],
    )
    content = "\n\n".join(" ".join(f"w{p}x{i}" for i in range(150)) for p in range(200)).encode()
    with request_deadline(5.0, clock=lambda: now[0]), pytest.raises(PayloadTooLarge, match="split it"):
        documents.upload("alice", name="long.txt", content_type="text/plain", content=content, category="g")
    assert repository.documents == {} and files.objects == {}
    now[0] = 0.0
    with request_deadline(12.0, clock=lambda: now[0]):
        stored = documents.upload("alice", name="long.txt", content_type="text/plain", content=content, category="g")
    assert stored.document.passages == 200
