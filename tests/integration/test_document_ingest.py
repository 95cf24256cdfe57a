"""Large documents over HTTP against the local stack: an upload of more passages than the inline
threshold (lowered here, so no 300-page book is read in CI) answers 202 "processing"; the template's
documents queue carries its reference to the ingest function (driven by the harness's poller), which
makes it ready and its passages searchable; one whose reading fails there becomes failed and keeps
no passage and no object; a corrupt file is still refused at once (422)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pai_core.adapters.document_codec import PASSAGES_SUFFIX
from pai_core.documents.detect import ContentType
from pai_core.documents.parse import ParsedDocument
from pai_core.errors import UnreadableDocument
from pai_local.stack import RunningStack
from tests.documents_support import make_pdf
from tests.integration.support import ApiClient, scan_all

pytestmark = pytest.mark.integration

READY_WITHIN_SECONDS = 60.0
# Three paragraphs of 300 distinct words: more passages than the lowered threshold of one.
WORDS = [f"harbour{p}word{i}" for p in range(3) for i in range(300)]
LONG = "\n\n".join(" ".join(WORDS[p * 300 : (p + 1) * 300]) for p in range(3)).encode()


@pytest.fixture
def api(stack: RunningStack, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ApiClient]:
    monkeypatch.setattr(stack.container.documents, "inline_max_passages", 1)
    user_id = f"ingest-{uuid.uuid4().hex[:12]}"
    issued = stack.container.api_keys.issue(user_id, "ingest tests")
    return user_id, ApiClient(stack.gateway_url, api_key=issued.key)


def upload(api: ApiClient, name: str, content_type: str, content: bytes) -> Any:
    body = {
        "action": "upload",
        "name": name,
        "contentType": content_type,
        "content": base64.b64encode(content).decode(),
    }
    return api.post("/documents", body)


def settled(api: ApiClient, document_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while True:
        got = api.post("/documents", {"action": "get", "id": document_id})
        assert got.status == 200, got.json
        if got.json["status"] != "processing":
            return dict(got.json)
        if time.monotonic() > deadline:
            pytest.fail(f"still processing after {READY_WITHIN_SECONDS:g} s")
        time.sleep(0.5)


def passage_items(aws: Callable[[str], Any], stack: RunningStack, user_id: str) -> list[dict[str, Any]]:
    return [
        item
        for item in scan_all(aws("dynamodb"), stack.settings.knowledge_table)
        if item["owner"]["S"] == user_id + PASSAGES_SUFFIX
    ]


def objects(aws: Callable[[str], Any], stack: RunningStack, user_id: str) -> list[str]:
    page = aws("s3").list_object_versions(Bucket=stack.resources.bucket, Prefix=f"documents/{user_id}/")
    return [v["Key"] for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]


def test_a_large_upload_is_accepted_then_ready_and_searchable(
    api: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user_id, client = api
    accepted = upload(client, "harbour.txt", "text/plain", LONG)
    assert accepted.status == 202, accepted.json
    assert accepted.json["status"] == "processing" and accepted.json["passages"] >= 3
    document_id = accepted.json["id"]
    # The same bytes while it is read: the same document, a duplicate.
    again = upload(client, "again.txt", "text/plain", LONG)
    assert again.status == 200 and again.json["id"] == document_id and again.json["duplicate"] is True
    ready = settled(client, document_id)
    assert ready["status"] == "ready" and "failure" not in ready and ready["passages"] >= 3
    listed = client.post("/documents", {"action": "list"}).json["items"]
    assert [(d["id"], d["status"]) for d in listed] == [(document_id, "ready")]
    found = client.post("/search", {"query": " ".join(WORDS[320:330]), "topK": 1, "sources": ["documents"]})
    assert found.status == 200 and found.json["results"][0]["documentId"] == document_id
    assert len(passage_items(aws, stack, user_id)) == ready["passages"]
    # A small file stays in its request.
    small = upload(client, "small.txt", "text/plain", b"The harbour master's office opens at nine.")
    assert small.status == 201 and small.json["status"] == "ready"
    # The queue carries references only, and retries into a dead-letter queue.
    url = stack.settings.documents_queue_url
    assert url is not None
    attributes = aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert '"maxReceiveCount": 3' in attributes["RedrivePolicy"] or "maxReceiveCount" in attributes["RedrivePolicy"]


def test_a_large_upload_whose_reading_fails_is_failed_with_nothing_kept(
    api: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, client = api
    service = stack.container.documents
    reads: list[int] = []
    parser = service._parser

    def reads_once(content: bytes, content_type: ContentType) -> ParsedDocument:
        # Read in the request; not in the ingest function (as when its worker runs out of memory there).
        reads.append(1)
        if len(reads) > 1:
            raise UnreadableDocument("the document could not be read within the memory and time allowed")
        return parser(content, content_type)

    monkeypatch.setattr(service, "_parser", reads_once)
    accepted = upload(client, "doomed.txt", "text/plain", LONG)
    assert accepted.status == 202, accepted.json
    failed = settled(client, accepted.json["id"])
    assert failed["status"] == "failed" and failed["passages"] == 0
    assert failed["failure"] == "the document could not be read within the memory and time allowed"
    assert passage_items(aws, stack, user_id) == [] and objects(aws, stack, user_id) == []
    found = client.post("/search", {"query": " ".join(WORDS[320:330]), "topK": 5, "sources": ["documents"]})
    assert found.json["results"] == []
    # Deleting the failed document leaves nothing of it.
    assert client.post("/documents", {"action": "delete", "id": accepted.json["id"]}).status == 200
    assert client.post("/documents", {"action": "list"}).json["items"] == []


def test_a_corrupt_large_file_is_refused_at_once(
    api: tuple[str, ApiClient], aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user_id, client = api
    pdf = make_pdf([[" ".join(WORDS[p * 100 : (p + 1) * 100])] for p in range(9)])
    refused = upload(client, "broken.pdf", "application/pdf", pdf[:-400])
    assert refused.status == 422 and refused.json["error"]["code"] == "unreadable_document"
    assert client.post("/documents", {"action": "list"}).json["items"] == []
    assert passage_items(aws, stack, user_id) == [] and objects(aws, stack, user_id) == []
