"""The knowledge base over HTTP against the local stack: upload of each type, duplicates, list, get,
delete, passages in search, export and forget, every bad input's status with nothing stored, and a
raw read of the table and the bucket that finds no plaintext of a document and no plaintext vector."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pai_core.adapters.document_codec import DOCUMENTS_SUFFIX, PASSAGES_SUFFIX
from pai_core.bootstrap import Container
from pai_core.models import ItemRef
from pai_core.search import LiveMemoryIndex
from pai_core.services.retrieval import PassageHit
from pai_local.stack import RunningStack
from tests.documents_support import DOCX, bad_files, make_docx, make_pdf
from tests.integration.support import ApiClient, HttpResult, find_plaintext, scan_all

pytestmark = pytest.mark.integration


@pytest.fixture
def user(stack: RunningStack) -> tuple[str, ApiClient]:
    """A user of their own for each test, so that counts of what is stored are theirs alone."""
    user_id = f"docs-{uuid.uuid4().hex[:12]}"
    issued = stack.container.api_keys.issue(user_id, "documents tests")
    return user_id, ApiClient(stack.gateway_url, api_key=issued.key)


def upload(api: ApiClient, name: str, content_type: str, content: bytes, **extra: Any) -> HttpResult:
    body = {
        "action": "upload",
        "name": name,
        "contentType": content_type,
        "content": base64.b64encode(content).decode(),
    }
    return api.post("/documents", {**body, **extra})


def stored_of(aws: Callable[[str], Any], stack: RunningStack, user_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The user's document items in the knowledge table, and every object version of theirs under documents/."""
    items = [
        item
        for item in scan_all(aws("dynamodb"), stack.settings.knowledge_table)
        if item["owner"]["S"].startswith(user_id + "#") and not item["owner"]["S"].endswith("#changes")
    ]
    s3 = aws("s3")
    versions: list[str] = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=stack.resources.bucket, Prefix=f"documents/{user_id}/"
    ):
        versions += [v["Key"] for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
    return items, versions


def test_each_type_uploads_lists_gets_searches_and_deletes(
    user: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user_id, api = user
    files = {
        "notes.txt": ("text/plain", b"The spare house key is under the blue flowerpot."),
        "garden.md": ("text/markdown", b"# Garden\n\nWater the lemon tree every Sunday morning.\n"),
        "page.html": (
            "text/html",
            b"<html><script>var tracking = 1;</script><body><h1>Car</h1>"
            b"<p>The car's winter tyres are stored at the garage on Elm Street.</p></body></html>",
        ),
        "manual.pdf": (
            "application/pdf",
            make_pdf([["Chapter one: the boiler."], ["Bleed the radiators in October every year."]]),
        ),
        "letter.docx": (
            DOCX,
            make_docx([("Insurance", "Heading 1"), ("The home insurance policy renews on March 3rd.", None)]),
        ),
    }
    ids = {}
    for name, (content_type, content) in files.items():
        result = upload(api, name, content_type, content, category="home")
        assert result.status == 201, (name, result)
        document = result.json
        assert set(document) == {
            "id", "name", "contentType", "category", "bytes", "pages", "passages", "createdAt", "status",
        }  # fmt: skip
        assert document["status"] == "ready"
        assert (document["name"], document["contentType"], document["bytes"]) == (name, content_type, len(content))
        assert document["category"] == "home" and document["passages"] >= 1
        assert document["pages"] == (2 if name.endswith(".pdf") else None)
        ids[name] = document["id"]

    again = upload(api, "renamed.txt", "text/plain", files["notes.txt"][1])
    assert again.status == 200 and again.json["duplicate"] is True and again.json["id"] == ids["notes.txt"]

    listed = api.post("/documents", {"action": "list", "limit": 3})
    assert listed.status == 200 and len(listed.json["items"]) == 3 and listed.json["cursor"]
    rest = api.post("/documents", {"action": "list", "limit": 3, "cursor": listed.json["cursor"]})
    names = [d["name"] for d in listed.json["items"] + rest.json["items"]]
    assert names == list(reversed(files))  # newest first
    assert api.post("/documents", {"action": "get", "id": ids["garden.md"]}).json["name"] == "garden.md"

    expectations = {
        "Bleed the radiators in October": ("manual.pdf", 2, None),
        "Water the lemon tree every Sunday": ("garden.md", None, "Garden"),
        "winter tyres stored at the garage": ("page.html", None, "Car"),
        "home insurance policy renews": ("letter.docx", None, "Insurance"),
    }
    for query, (name, page, heading) in expectations.items():
        found = api.post("/search", {"query": query, "topK": 1, "sources": ["documents"]})
        assert found.status == 200, found
        (hit,) = found.json["results"]
        assert hit["kind"] == "document" and hit["name"] == name and hit["documentId"] == ids[name]
        assert (hit["page"], hit["heading"]) == (page, heading)
        assert set(hit) == {
            "kind",
            "id",
            "content",
            "category",
            "createdAt",
            "score",
            "documentId",
            "name",
            "page",
            "heading",
        }
    assert "tracking" not in str(api.post("/search", {"query": "var tracking", "topK": 10}).json)
    memories_only = api.post("/search", {"query": "Bleed the radiators", "topK": 5, "sources": ["memories"]})
    assert memories_only.json["results"] == []

    deleted = api.post("/documents", {"action": "delete", "id": ids["manual.pdf"]})
    assert deleted.status == 200 and deleted.json == {"id": ids["manual.pdf"], "deleted": True}
    after = api.post("/search", {"query": "Bleed the radiators in October", "topK": 10}).json["results"]
    assert all(hit.get("documentId") != ids["manual.pdf"] for hit in after)
    assert api.post("/documents", {"action": "get", "id": ids["manual.pdf"]}).status == 404
    assert api.post("/documents", {"action": "delete", "id": ids["manual.pdf"]}).status == 404
    items, versions = stored_of(aws, stack, user_id)
    assert not [i for i in items if ids["manual.pdf"] in i["id"]["S"]]
    assert not [key for key in versions if ids["manual.pdf"] in key]


def test_export_holds_documents_with_their_text_and_forget_removes_them(
    user: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user_id, api = user
    document = upload(api, "plan.md", "text/markdown", b"# Trip\n\nTrain to Lyon on the 4th.").json
    export = api.post("/account", {"action": "export"})
    assert export.status == 200
    (exported,) = export.json["documents"]
    assert exported["id"] == document["id"] and exported["name"] == "plan.md"
    assert "Train to Lyon on the 4th." in exported["text"]

    items, versions = stored_of(aws, stack, user_id)
    assert items and len(versions) == 2
    forgotten = api.post("/account", {"action": "forget", "confirm": "forget everything"})
    assert forgotten.status == 200 and forgotten.json["deleted"]["documents"] == 1
    assert stored_of(aws, stack, user_id) == ([], [])


def test_every_bad_input_gets_its_status_and_stores_nothing(
    user: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user_id, api = user
    body = {"action": "upload", "name": "x.txt", "contentType": "text/plain"}
    not_base64 = api.post("/documents", {**body, "content": "this is not base64!"})
    assert not_base64.status == 400 and not_base64.json["error"]["field"] == "content"
    too_big = upload(api, "big.txt", "text/plain", b"a" * (4 * 1024 * 1024 + 1))
    assert too_big.status == 413, too_big
    unsupported = upload(api, "x.png", "image/png", b"\x89PNG\r\n")
    assert unsupported.status == 415 and unsupported.json["error"]["code"] == "unsupported_media_type"
    assert upload(api, "a/b.txt", "text/plain", b"hi").status == 400
    for name, (content, content_type, reason) in bad_files().items():
        result = upload(api, "bad", content_type, content)
        assert result.status == 422, (name, result)
        assert result.json["error"]["code"] == "unreadable_document"
        assert reason in result.json["error"]["message"], (name, result.json)
    assert stored_of(aws, stack, user_id) == ([], [])


def test_no_plaintext_of_a_document_or_its_vectors_at_rest(
    user: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user_id, api = user
    mark = uuid.uuid4().hex[:8]
    sentences = [f"Quokka{mark} sightings logged near the lighthouse", f"Pangolin{mark} passport number kept in drawer"]
    pdf = make_pdf([[sentences[0]], [sentences[1]]])
    name = f"Secret dossier {mark}.pdf"
    document = upload(api, name, "application/pdf", pdf).json
    needles = [f"Quokka{mark}", f"Pangolin{mark}", f"dossier {mark}", "lighthouse"]

    leaks: list[str] = []
    for item in scan_all(aws("dynamodb"), stack.settings.knowledge_table):
        if item["owner"]["S"].startswith(user_id):
            leaks += find_plaintext(item, needles, where="knowledge")
    s3 = aws("s3")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=stack.resources.bucket):
        for version in page.get("Versions", []):
            body = s3.get_object(Bucket=stack.resources.bucket, Key=version["Key"], VersionId=version["VersionId"])
            leaks += find_plaintext(body["Body"].read(), needles, where=version["Key"])
    assert not leaks, leaks

    passages = [
        item
        for item in scan_all(aws("dynamodb"), stack.settings.knowledge_table)
        if item["owner"]["S"] == user_id + PASSAGES_SUFFIX
    ]
    assert len(passages) == document["passages"] == 2
    for item in passages:
        for attribute in ("encryptedContent", "encryptedEmbedding"):
            assert item[attribute]["B"][:1] == b"\x02"  # a version-2 envelope frame
    raw = b"".join(v["B"] for item in passages for v in item.values() if "B" in v) + repr(passages).encode()
    for sentence in sentences:
        vector = stack.container.embedder.embed([sentence])[0].astype("<f4").tobytes()
        assert not any(vector[i : i + 16] in raw for i in range(0, len(vector) - 16, 16))
    (meta,) = [
        item
        for item in scan_all(aws("dynamodb"), stack.settings.knowledge_table)
        if item["owner"]["S"] == user_id + DOCUMENTS_SUFFIX
    ]
    assert "name" not in meta and meta["encryptedName"]["B"][:1] == b"\x02"


def test_another_containers_warm_index_gains_and_drops_passages_through_the_change_log(
    user: tuple[str, ApiClient], stack: RunningStack
) -> None:
    """A container that did not upload (another Lambda environment) learns of the passages, and of
    their deletion, from the owner's change log at its next search."""
    user_id, api = user
    other = Container(stack.settings)
    other.embedder = stack.container.embedder  # share the loaded model
    upload(api, "warm-up.txt", "text/plain", b"Nothing much in here about anything.")
    assert other.retrieval.search(user_id, "warm the index", top=5)  # loads the index: one passage
    index = other.search_index
    assert isinstance(index, LiveMemoryIndex)

    document = upload(api, "wine.md", "text/markdown", b"# Cellar\n\nThe 2015 Rioja is on the bottom rack.").json
    (hit,) = other.retrieval.search(user_id, "where is the Rioja", top=1, sources=["documents"])
    assert isinstance(hit, PassageHit) and hit.document.id == document["id"] and hit.passage.heading == "Cellar"
    held = index.index_of(user_id)
    assert held is not None
    assert ItemRef("passage", f"{document['id']}#00000") in held.refs()

    assert api.post("/documents", {"action": "delete", "id": document["id"]}).status == 200
    after = other.retrieval.search(user_id, "where is the Rioja", top=5)
    assert all(not isinstance(h, PassageHit) or h.document.id != document["id"] for h in after)
    held = index.index_of(user_id)
    assert held is not None
    assert not [ref for ref in held.refs() if ref.id.startswith(document["id"])]
