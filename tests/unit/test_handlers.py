"""The Lambda handlers, called as API Gateway (HTTP API, payload format 2.0) calls them.

Each test loads a recorded event (events/apigw_v2_post.json), sets the route and body, and calls
`handlers.<module>.handler(event, context)` with the fakes of tests/fakes.py installed as the
composition root. Statuses, headers and JSON shapes are those of shared/API.md.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest

import handlers.chat
import handlers.memory
import handlers.search
from pai_core.errors import UpstreamUnavailable
from pai_core.services import MemoryService
from tests.fakes import FakeContainer, FakeLambdaContext, as_user, dynamo_memories, fake_cipher

pytestmark = pytest.mark.usefixtures("fake_container")

EVENT_FILE = Path(__file__).parent / "events" / "apigw_v2_post.json"
MAX_BODY_BYTES = 256 * 1024
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FAKE_NOW = "2026-11-24T12:00:00.000Z"  # tests.fakes.FixedClock's start

MEMORY = handlers.memory
SEARCH = handlers.search
CHAT = handlers.chat


# -- invoking a handler ---------------------------------------------------------------------------


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased
    body: Any  # the decoded JSON body


@cache
def _recorded_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    return event


def make_event(route: str, body: str | None, *, base64_encoded: bool = False) -> dict[str, Any]:
    """The recorded event with route ("POST /memory"), path and body replaced, its API key
    accepted by the authorizer as one of the default owner's."""
    method, path = route.split(" ", 1)
    event = as_user(copy.deepcopy(_recorded_event()))
    event["routeKey"] = route
    event["rawPath"] = path
    event["requestContext"]["routeKey"] = route
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    if body is None:
        event["headers"].pop("content-length", None)
        event["headers"].pop("content-type", None)
    else:
        event["headers"]["content-length"] = str(len(body.encode("utf-8", "surrogatepass")))
    return event


def call(handler_module: ModuleType, event: dict[str, Any]) -> Reply:
    response = handler_module.handler(event, FakeLambdaContext())
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    assert response.get("isBase64Encoded") is False
    assert headers.get("content-type") == "application/json", response
    return Reply(response["statusCode"], headers, json.loads(response["body"]))


def invoke_raw(handler_module: ModuleType, route: str, raw_body: str | None, *, base64_encoded: bool = False) -> Reply:
    return call(handler_module, make_event(route, raw_body, base64_encoded=base64_encoded))


def invoke(handler_module: ModuleType, route: str, body: Any) -> Reply:
    """POST (or GET) `body`, JSON-encoded, to `route`."""
    return invoke_raw(handler_module, route, json.dumps(body))


def memory(body: Any) -> Reply:
    return invoke(MEMORY, "POST /memory", body)


def search(body: Any) -> Reply:
    return invoke(SEARCH, "POST /search", body)


def chat(body: Any) -> Reply:
    return invoke(CHAT, "POST /chat", body)


def health() -> Reply:
    return invoke_raw(MEMORY, "GET /health", None)


ENDPOINTS = [
    pytest.param(MEMORY, "POST /memory", id="memory"),
    pytest.param(SEARCH, "POST /search", id="search"),
    pytest.param(CHAT, "POST /chat", id="chat"),
]


# -- assertions -----------------------------------------------------------------------------------


def assert_error(reply: Reply, status: int, code: str | None = None, *, field: str | None = None) -> dict[str, Any]:
    """`{"error": {"code", "message"[, "field"]}}` with `status`; returns the error object."""
    assert reply.status == status, reply
    assert set(reply.body) == {"error"}, reply.body
    error = reply.body["error"]
    assert set(error) <= {"code", "message", "field"}, error
    assert isinstance(error["code"], str)
    assert SNAKE_CASE.match(error["code"]), error
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
        assert field in error["message"], error
    return dict(error)


def assert_bad_request(reply: Reply, field: str | None = None, code: str | None = None) -> None:
    assert_error(reply, 400, code, field=field)


def assert_retry_after(reply: Reply) -> None:
    assert_error(reply, 503, "service_unavailable")
    assert "retry-after" in reply.headers, reply.headers
    assert int(reply.headers["retry-after"]) >= 1


def assert_internal_error(reply: Reply) -> None:
    assert reply.status == 500, reply
    assert set(reply.body) == {"error"}
    assert set(reply.body["error"]) == {"code", "message"}
    assert reply.body["error"]["code"] == "internal_error"
    message = reply.body["error"]["message"]
    assert isinstance(message, str)
    assert message
    for leak in ("Traceback", "RuntimeError", "boom", ".py"):
        assert leak not in message


# -- helpers for setting up state -----------------------------------------------------------------


def store(content: str, **fields: Any) -> str:
    reply = memory({"action": "store", "content": content, **fields})
    assert reply.status == 201, reply
    memory_id: str = reply.body["id"]
    return memory_id


def list_ids(**fields: Any) -> list[str]:
    reply = memory({"action": "list", "limit": 100, **fields})
    assert reply.status == 200, reply
    return [item["id"] for item in reply.body["items"]]


def search_ids(query: str, **fields: Any) -> list[str]:
    reply = search({"query": query, "topK": 50, **fields})
    assert reply.status == 200, reply
    return [hit["id"] for hit in reply.body["results"]]


def list_all_pages(limit: int, **fields: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        body: dict[str, Any] = {"action": "list", "limit": limit, **fields}
        if cursor is not None:
            body["cursor"] = cursor
        reply = memory(body)
        assert reply.status == 200, reply
        assert set(reply.body) == {"items", "cursor"}
        assert len(reply.body["items"]) <= limit
        pages.append(reply.body["items"])
        cursor = reply.body["cursor"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str)
        assert len(pages) < 50, "cursor paging does not terminate"


MEMORY_KEYS = {"id", "content", "category", "metadata", "createdAt", "updatedAt", "origin"}


# == the recorded event ===========================================================================


def test_recorded_event_is_a_payload_format_2_event() -> None:
    event = _recorded_event()
    assert event["version"] == "2.0"
    assert event["isBase64Encoded"] is False
    assert isinstance(event["body"], str)
    context = event["requestContext"]
    assert context["stage"] == "$default"
    assert set(context["http"]) >= {"method", "path", "protocol", "sourceIp", "userAgent"}
    assert {"accountId", "apiId", "domainName", "requestId", "routeKey", "time", "timeEpoch"} <= set(context)
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["authorization"].startswith("Bearer ")


# == POST /memory: success paths ==================================================================


def test_store_returns_201_with_id_category_created_at_and_default_category() -> None:
    reply = memory({"action": "store", "content": "My cat is called Miso"})
    assert reply.status == 201
    assert set(reply.body) == {"id", "category", "createdAt"}
    assert isinstance(reply.body["id"], str)
    assert reply.body["id"]
    assert reply.body["category"] == "general"
    assert ISO_UTC.match(reply.body["createdAt"])
    assert reply.body["createdAt"] == FAKE_NOW


def test_store_then_retrieve_returns_content_category_metadata(fake_container: FakeContainer) -> None:
    metadata = {"source": "note", "tags": ["cat", "home"], "n": 3, "nested": {"ok": True}}
    stored = memory({"action": "store", "content": "Miso likes tuna ✓ 😺", "category": "pets", "metadata": metadata})
    assert stored.status == 201
    assert stored.body["category"] == "pets"

    reply = memory({"action": "retrieve", "id": stored.body["id"]})
    assert reply.status == 200
    assert reply.body == {
        "id": stored.body["id"],
        "content": "Miso likes tuna ✓ 😺",
        "category": "pets",
        "metadata": metadata,
        "createdAt": stored.body["createdAt"],
        "updatedAt": stored.body["createdAt"],
        "origin": "api",
    }
    assert len(fake_container.memory_repository.items) == 1


def test_retrieve_without_metadata_gives_empty_object() -> None:
    memory_id = store("plain")
    reply = memory({"action": "retrieve", "id": memory_id})
    assert reply.status == 200
    assert set(reply.body) == MEMORY_KEYS
    assert reply.body["metadata"] == {}
    assert reply.body["category"] == "general"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"content": "x" * 100_000}, id="content-100000-chars"),
        pytest.param({"content": "x", "category": "a" * 64}, id="category-64-chars"),
        pytest.param({"content": "x", "category": "a-b_c-0-9"}, id="category-all-allowed-chars"),
        pytest.param({"content": "x", "metadata": {"k": "x" * (8192 - len('{"k":""}'))}}, id="metadata-8KiB"),
        pytest.param({"content": "x", "metadata": {}}, id="metadata-empty"),
        pytest.param({"content": "x", "category": None, "metadata": None}, id="optional-fields-null"),
    ],
)
def test_store_accepts_values_at_the_limits(fields: dict[str, Any]) -> None:
    reply = memory({"action": "store", **fields})
    assert reply.status == 201, reply
    retrieved = memory({"action": "retrieve", "id": reply.body["id"]})
    assert retrieved.status == 200
    assert retrieved.body["content"] == fields["content"]
    assert retrieved.body["category"] == (fields.get("category") or "general")


def test_store_ignores_unknown_fields() -> None:
    reply = memory({"action": "store", "content": "hello", "colour": "blue", "owner": "mallory", "id": "chosen"})
    assert reply.status == 201
    assert reply.body["id"] != "chosen"
    retrieved = memory({"action": "retrieve", "id": reply.body["id"], "extra": [1, 2]})
    assert retrieved.status == 200
    assert set(retrieved.body) == MEMORY_KEYS
    assert retrieved.body["content"] == "hello"


def test_list_is_newest_first(fake_container: FakeContainer) -> None:
    ids = []
    for i in range(5):
        ids.append(store(f"memory number {i}"))
        fake_container.clock.advance(seconds=1)
    reply = memory({"action": "list"})
    assert reply.status == 200
    assert set(reply.body) == {"items", "cursor"}
    assert reply.body["cursor"] is None
    items = reply.body["items"]
    assert [item["id"] for item in items] == ids[::-1]
    assert all(set(item) == MEMORY_KEYS for item in items)
    created = [item["createdAt"] for item in items]
    assert created == sorted(created, reverse=True)
    assert items[0]["content"] == "memory number 4"


def test_list_of_nothing_is_empty_with_null_cursor() -> None:
    reply = memory({"action": "list"})
    assert reply.status == 200
    assert reply.body == {"items": [], "cursor": None}


def test_list_default_limit_is_20() -> None:
    for i in range(25):
        store(f"m{i}")
    reply = memory({"action": "list"})
    assert reply.status == 200
    assert len(reply.body["items"]) == 20
    assert isinstance(reply.body["cursor"], str)


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 100])
def test_list_pages_with_cursor_until_null(fake_container: FakeContainer, limit: int) -> None:
    ids = []
    for i in range(10):
        ids.append(store(f"memory {i}"))
        fake_container.clock.advance(milliseconds=5)
    pages = list_all_pages(limit)
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit
    seen = [item["id"] for page in pages for item in page]
    assert seen == ids[::-1]  # every memory once, newest first, across pages


def test_list_filters_by_category() -> None:
    pets = [store("cat", category="pets"), store("dog", category="pets")]
    store("dentist", category="health")
    assert list_ids(category="pets") == pets[::-1]
    assert list_ids(category="nothing-here") == []
    pages = list_all_pages(1, category="pets")
    assert [page[0]["id"] for page in pages] == pets[::-1]
    assert all(page[0]["category"] == "pets" for page in pages)


def test_delete_then_memory_is_gone_everywhere() -> None:
    keep = store("my cat miso likes tuna", category="pets")
    gone = store("my cat miso hates rain", category="pets")
    assert gone in search_ids("cat miso")

    reply = memory({"action": "delete", "id": gone})
    assert reply.status == 200
    assert reply.body == {"id": gone, "deleted": True}

    assert_error(memory({"action": "retrieve", "id": gone}), 404, "not_found")
    assert list_ids() == [keep]
    assert list_ids(category="pets") == [keep]
    assert search_ids("cat miso hates rain") == [keep]
    assert_error(memory({"action": "delete", "id": gone}), 404, "not_found")


@pytest.mark.parametrize("action", ["retrieve", "delete"])
@pytest.mark.parametrize("memory_id", ["does-not-exist", "0" * 32, "ffffffffffffffffffffffffffffffff"])
def test_unknown_id_is_404_not_found(action: str, memory_id: str) -> None:
    store("something else")
    assert_error(memory({"action": action, "id": memory_id}), 404, "not_found")


# == POST /memory: bad requests ===================================================================


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({}, None, id="missing"),
        pytest.param({"action": None}, None, id="null"),
        pytest.param({"content": "x"}, None, id="missing-with-content"),
        pytest.param({"action": "erase"}, "unknown_action", id="unknown"),
        pytest.param({"action": "STORE", "content": "x"}, "unknown_action", id="wrong-case"),
        pytest.param({"action": ""}, None, id="empty"),
        pytest.param({"action": 5}, None, id="number"),
        pytest.param({"action": ["store"]}, None, id="array"),
        pytest.param({"action": {"name": "store"}}, None, id="object"),
    ],
)
def test_missing_or_unknown_action_is_400_naming_action(body: dict[str, Any], code: str | None) -> None:
    assert_bad_request(memory(body), "action", code)


STORE_BAD_FIELDS = [
    pytest.param({}, "content", id="content-missing"),
    pytest.param({"content": None}, "content", id="content-null"),
    pytest.param({"content": ""}, "content", id="content-empty"),
    pytest.param({"content": 5}, "content", id="content-number"),
    pytest.param({"content": True}, "content", id="content-bool"),
    pytest.param({"content": ["a"]}, "content", id="content-array"),
    pytest.param({"content": {"text": "a"}}, "content", id="content-object"),
    pytest.param({"content": "x" * 100_001}, "content", id="content-100001-chars"),
    pytest.param({"content": "x", "category": "Work"}, "category", id="category-uppercase"),
    pytest.param({"content": "x", "category": "a b"}, "category", id="category-space"),
    pytest.param({"content": "x", "category": "a" * 65}, "category", id="category-65-chars"),
    pytest.param({"content": "x", "category": ""}, "category", id="category-empty"),
    pytest.param({"content": "x", "category": "wörk"}, "category", id="category-non-ascii"),
    pytest.param({"content": "x", "category": "a.b"}, "category", id="category-dot"),
    pytest.param({"content": "x", "category": "work\n"}, "category", id="category-trailing-newline"),
    pytest.param({"content": "x", "category": 5}, "category", id="category-number"),
    pytest.param({"content": "x", "category": ["work"]}, "category", id="category-array"),
    pytest.param({"content": "x", "metadata": "x"}, "metadata", id="metadata-string"),
    pytest.param({"content": "x", "metadata": [1, 2]}, "metadata", id="metadata-array"),
    pytest.param({"content": "x", "metadata": 5}, "metadata", id="metadata-number"),
    pytest.param({"content": "x", "metadata": True}, "metadata", id="metadata-bool"),
    pytest.param(
        {"content": "x", "metadata": {"k": "x" * (8193 - len('{"k":""}'))}}, "metadata", id="metadata-8KiB-plus-1"
    ),
    pytest.param({"content": "x", "metadata": {"k": "é" * 4100}}, "metadata", id="metadata-over-8KiB-in-utf8"),
]


@pytest.mark.parametrize(("fields", "field"), STORE_BAD_FIELDS)
def test_store_with_bad_field_is_400_naming_it(
    fake_container: FakeContainer, fields: dict[str, Any], field: str
) -> None:
    assert_bad_request(memory({"action": "store", **fields}), field)
    assert fake_container.memory_repository.items == {}
    assert fake_container.embedder.calls == 0


@pytest.mark.parametrize("action", ["retrieve", "delete"])
@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="missing"),
        pytest.param({"id": None}, id="null"),
        pytest.param({"id": ""}, id="empty"),
        pytest.param({"id": 5}, id="number"),
        pytest.param({"id": True}, id="bool"),
        pytest.param({"id": ["a"]}, id="array"),
        pytest.param({"id": {"id": "a"}}, id="object"),
    ],
)
def test_retrieve_or_delete_with_bad_id_is_400_naming_id(action: str, fields: dict[str, Any]) -> None:
    memory_id = store("still here")
    assert_bad_request(memory({"action": action, **fields}), "id")
    assert list_ids() == [memory_id]


LIST_BAD_FIELDS = [
    pytest.param({"limit": 0}, "limit", id="limit-0"),
    pytest.param({"limit": 101}, "limit", id="limit-101"),
    pytest.param({"limit": -1}, "limit", id="limit-negative"),
    pytest.param({"limit": "5"}, "limit", id="limit-string"),
    pytest.param({"limit": True}, "limit", id="limit-true"),
    pytest.param({"limit": False}, "limit", id="limit-false"),
    pytest.param({"limit": 1.5}, "limit", id="limit-float"),
    pytest.param({"limit": [5]}, "limit", id="limit-array"),
    pytest.param({"limit": 10**30}, "limit", id="limit-huge"),
    pytest.param({"cursor": 5}, "cursor", id="cursor-number"),
    pytest.param({"cursor": ""}, "cursor", id="cursor-empty"),
    pytest.param({"cursor": {"id": "x"}}, "cursor", id="cursor-object"),
    pytest.param({"cursor": "c" * 5000}, "cursor", id="cursor-too-long"),
    pytest.param({"category": "Work"}, "category", id="category-uppercase"),
    pytest.param({"category": "a b"}, "category", id="category-space"),
    pytest.param({"category": "a" * 65}, "category", id="category-65-chars"),
    pytest.param({"category": 1}, "category", id="category-number"),
]


@pytest.mark.parametrize(("fields", "field"), LIST_BAD_FIELDS)
def test_list_with_bad_field_is_400_naming_it(fields: dict[str, Any], field: str) -> None:
    store("one")
    assert_bad_request(memory({"action": "list", **fields}), field)


@pytest.mark.parametrize("limit", [1, 100])
def test_list_accepts_limit_bounds(limit: int) -> None:
    for i in range(3):
        store(f"m{i}")
    reply = memory({"action": "list", "limit": limit})
    assert reply.status == 200
    assert len(reply.body["items"]) == min(limit, 3)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class ClientMustNotBeCalled:
    """A DynamoDB client for tests where the request must be refused before any call."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"DynamoDB {name} called for a request that should have been refused")


@pytest.mark.parametrize("category", [None, "pets"])
@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="garbage"),
        pytest.param("%%%%", id="punctuation"),
        pytest.param("é", id="non-ascii"),
        pytest.param("A", id="one-char"),
        pytest.param(_b64url(b"\xff\xfe\xfd"), id="not-utf8"),
        pytest.param(_b64url(b"not json"), id="not-json"),
        pytest.param(_b64url(b"[1, 2]"), id="json-array"),
        pytest.param(_b64url(b"{}"), id="no-id"),
        pytest.param(_b64url(b'{"id": 5}'), id="id-not-string"),
        pytest.param(_b64url(b'{"id": ""}'), id="id-empty"),
        pytest.param(_b64url(json.dumps({"id": "x" * 200}).encode()), id="id-too-long"),
    ],
)
def test_list_with_garbage_cursor_is_400_naming_cursor(
    fake_container: FakeContainer, cursor: str, category: str | None
) -> None:
    # The cursor's format belongs to the storage adapter (the in-memory fake accepts any string),
    # so this runs the production DynamoDB repository, whose client must never be reached.
    repository = dynamo_memories(ClientMustNotBeCalled(), "pai-knowledge-test", fake_cipher())
    fake_container.memories = MemoryService(repository, fake_container.embedder, fake_container.clock)
    body: dict[str, Any] = {"action": "list", "cursor": cursor}
    if category is not None:
        body["category"] = category
    assert_bad_request(memory(body), "cursor")


# == POST /search =================================================================================


def test_search_results_sorted_by_score_with_all_fields() -> None:
    best = store("my cat miso likes tuna fish", category="pets", metadata={"k": 1})
    store("my cat sleeps all day", category="pets")
    store("the dentist appointment is on tuesday", category="health")
    store("tuna sandwich recipe", category="food")

    reply = search({"query": "cat miso tuna", "topK": 10})
    assert reply.status == 200
    assert set(reply.body) == {"results"}
    results = reply.body["results"]
    assert 1 <= len(results) <= 4
    # API v2: every result says its kind.
    assert all(set(hit) == {*MEMORY_KEYS, "score", "kind"} and hit["kind"] == "memory" for hit in results)
    scores = [hit["score"] for hit in results]
    assert all(isinstance(score, float) for score in scores)
    assert all(-1.0 <= score <= 1.0 + 1e-6 for score in scores)
    assert scores == sorted(scores, reverse=True)
    top = results[0]
    assert top["id"] == best
    assert top["content"] == "my cat miso likes tuna fish"
    assert top["category"] == "pets"
    assert top["metadata"] == {"k": 1}
    assert top["createdAt"] == FAKE_NOW


@pytest.mark.parametrize(("top_k", "expected"), [(1, 1), (3, 3), (5, 5), (50, 8), (None, 5)])
def test_search_returns_at_most_top_k(top_k: int | None, expected: int) -> None:
    for i in range(8):
        store(f"shared words number {i}")
    body: dict[str, Any] = {"query": "shared words"}
    if top_k is not None:
        body["topK"] = top_k
    reply = search(body)
    assert reply.status == 200
    assert len(reply.body["results"]) == expected
    scores = [hit["score"] for hit in reply.body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_filters_by_category() -> None:
    store("cat food on monday", category="pets")
    health = store("cat allergy appointment", category="health")
    reply = search({"query": "cat", "category": "health"})
    assert reply.status == 200
    assert [hit["id"] for hit in reply.body["results"]] == [health]
    assert search({"query": "cat", "category": "none-such"}).body == {"results": []}


@pytest.mark.parametrize("min_score", [-1, -0.5, 0, 0.3, 0.6, 0.99, 1])
def test_search_filters_by_min_score(min_score: float) -> None:
    store("alpha beta gamma")
    store("alpha beta")
    store("alpha")
    store("unrelated words entirely")
    everything = search({"query": "alpha beta gamma", "topK": 50})
    assert everything.status == 200
    filtered = search({"query": "alpha beta gamma", "topK": 50, "minScore": min_score})
    assert filtered.status == 200
    expected = [hit for hit in everything.body["results"] if hit["score"] >= min_score]
    assert filtered.body["results"] == expected
    assert all(hit["score"] >= min_score for hit in filtered.body["results"])


def test_search_min_score_drops_weak_matches() -> None:
    exact = store("alpha beta gamma")
    store("unrelated words entirely")
    reply = search({"query": "alpha beta gamma", "minScore": 0.9})
    assert reply.status == 200
    assert [hit["id"] for hit in reply.body["results"]] == [exact]


def test_search_with_no_memories_is_empty() -> None:
    reply = search({"query": "anything"})
    assert reply.status == 200
    assert reply.body == {"results": []}


def test_search_ignores_unknown_fields() -> None:
    memory_id = store("hello world")
    reply = search({"query": "hello", "owner": "mallory", "page": 2})
    assert reply.status == 200
    assert [hit["id"] for hit in reply.body["results"]] == [memory_id]


SEARCH_BAD_FIELDS = [
    pytest.param({}, "query", id="query-missing"),
    pytest.param({"query": None}, "query", id="query-null"),
    pytest.param({"query": ""}, "query", id="query-empty"),
    pytest.param({"query": "x" * 10_001}, "query", id="query-10001-chars"),
    pytest.param({"query": 5}, "query", id="query-number"),
    pytest.param({"query": ["a"]}, "query", id="query-array"),
    pytest.param({"query": {"text": "a"}}, "query", id="query-object"),
    pytest.param({"query": "q", "topK": 0}, "topK", id="topK-0"),
    pytest.param({"query": "q", "topK": 51}, "topK", id="topK-51"),
    pytest.param({"query": "q", "topK": -1}, "topK", id="topK-negative"),
    pytest.param({"query": "q", "topK": "3"}, "topK", id="topK-string"),
    pytest.param({"query": "q", "topK": True}, "topK", id="topK-true"),
    pytest.param({"query": "q", "topK": 2.5}, "topK", id="topK-float"),
    pytest.param({"query": "q", "minScore": -1.5}, "minScore", id="minScore-below-minus-1"),
    pytest.param({"query": "q", "minScore": 1.5}, "minScore", id="minScore-above-1"),
    pytest.param({"query": "q", "minScore": "x"}, "minScore", id="minScore-string"),
    pytest.param({"query": "q", "minScore": "0.5"}, "minScore", id="minScore-numeric-string"),
    pytest.param({"query": "q", "minScore": True}, "minScore", id="minScore-true"),
    pytest.param({"query": "q", "minScore": [0.5]}, "minScore", id="minScore-array"),
    pytest.param({"query": "q", "category": "Work"}, "category", id="category-uppercase"),
    pytest.param({"query": "q", "category": "a b"}, "category", id="category-space"),
    pytest.param({"query": "q", "category": "a" * 65}, "category", id="category-65-chars"),
    pytest.param({"query": "q", "category": 7}, "category", id="category-number"),
]


@pytest.mark.parametrize(("body", "field"), SEARCH_BAD_FIELDS)
def test_search_with_bad_field_is_400_naming_it(body: dict[str, Any], field: str) -> None:
    store("q is a letter")
    assert_bad_request(search(body), field)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"query": "x" * 10_000}, id="query-10000-chars"),
        pytest.param({"query": "q", "topK": 1}, id="topK-1"),
        pytest.param({"query": "q", "topK": 50}, id="topK-50"),
        pytest.param({"query": "q", "minScore": -1}, id="minScore-minus-1"),
        pytest.param({"query": "q", "minScore": 1.0}, id="minScore-1"),
        pytest.param({"query": "q", "topK": None, "minScore": None, "category": None}, id="optional-null"),
    ],
)
def test_search_accepts_values_at_the_limits(body: dict[str, Any]) -> None:
    store("q is a letter")
    reply = search(body)
    assert reply.status == 200, reply
    assert isinstance(reply.body["results"], list)


# == POST /chat ===================================================================================


def test_chat_returns_reply_with_all_fields() -> None:
    reply = chat({"message": "Hello there"})
    assert reply.status == 200
    assert set(reply.body) == {"sessionId", "reply", "sources", "model", "usage", "learning"}
    assert reply.body["learning"] == "off"  # the fake composition root has no learning
    assert SESSION_ID.match(reply.body["sessionId"])
    assert reply.body["reply"] == "Noted."
    assert reply.body["model"] == "scripted-model"
    assert reply.body["sources"] == []  # no memories yet
    usage = reply.body["usage"]
    assert set(usage) == {"inputTokens", "outputTokens"}
    assert isinstance(usage["inputTokens"], int)
    assert usage["inputTokens"] > 0
    assert usage["outputTokens"] == 1


def test_chat_makes_a_new_session_when_absent_and_echoes_a_given_one(fake_container: FakeContainer) -> None:
    first = chat({"message": "one"}).body["sessionId"]
    second = chat({"message": "two", "sessionId": None}).body["sessionId"]
    assert first != second
    assert SESSION_ID.match(first)
    assert SESSION_ID.match(second)

    given = "my-Session_42"
    assert chat({"message": "three", "sessionId": given}).body["sessionId"] == given
    owner = fake_container.settings.owner
    assert [turn.role for turn in fake_container.conversations.turns[(owner, given)]] == ["user", "assistant"]


@pytest.mark.parametrize("session_id", ["a", "A" * 128, "abc-DEF_123"])
def test_chat_accepts_session_id_at_the_limits(session_id: str) -> None:
    reply = chat({"message": "hi", "sessionId": session_id})
    assert reply.status == 200
    assert reply.body["sessionId"] == session_id


def test_chat_second_turn_prompt_contains_the_first_turn(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "Hello Zorblax, nice to meet you."
    first = chat({"message": "My name is Zorblax", "useMemory": False})
    assert first.status == 200
    session = first.body["sessionId"]

    second = chat({"message": "What is my name?", "sessionId": session, "useMemory": False})
    assert second.status == 200
    assert second.body["sessionId"] == session

    prompts = fake_container.chat_model.prompts
    assert len(prompts) == 2
    second_prompt = [(m.role, m.content) for m in prompts[1]]
    assert ("user", "My name is Zorblax") in second_prompt
    assert ("assistant", "Hello Zorblax, nice to meet you.") in second_prompt
    assert second_prompt[-1] == ("user", "What is my name?")
    assert second_prompt[0][0] == "system"


def test_chat_other_session_does_not_see_the_first_turn(fake_container: FakeContainer) -> None:
    chat({"message": "My name is Zorblax", "sessionId": "session-a", "useMemory": False})
    chat({"message": "What is my name?", "sessionId": "session-b", "useMemory": False})
    other_prompt = " ".join(m.content for m in fake_container.chat_model.prompts[1])
    assert "Zorblax" not in other_prompt


def test_chat_uses_memories_as_sources(fake_container: FakeContainer) -> None:
    cat = store("my cat is called miso", category="pets")
    dentist = store("dentist appointment on tuesday", category="health")
    reply = chat({"message": "what is my cat called"})
    assert reply.status == 200
    sources = reply.body["sources"]
    assert sources
    assert all(set(source) == {"kind", "id", "score"} and source["kind"] == "memory" for source in sources)
    assert all(isinstance(source["score"], float) for source in sources)
    assert {source["id"] for source in sources} <= {cat, dentist}
    assert sources[0]["id"] == cat
    scores = [source["score"] for source in sources]
    assert scores == sorted(scores, reverse=True)
    assert "my cat is called miso" in fake_container.chat_model.prompts[0][0].content


def test_chat_top_k_limits_sources() -> None:
    for i in range(6):
        store(f"cat fact number {i}")
    reply = chat({"message": "cat fact", "topK": 2})
    assert reply.status == 200
    assert len(reply.body["sources"]) == 2


@pytest.mark.parametrize("fields", [{"useMemory": False}, {"topK": 0}, {"useMemory": False, "topK": 20}])
def test_chat_without_memory_gives_no_sources(fake_container: FakeContainer, fields: dict[str, Any]) -> None:
    store("my cat is called miso")
    reply = chat({"message": "what is my cat called", **fields})
    assert reply.status == 200
    assert reply.body["sources"] == []
    assert "miso" not in fake_container.chat_model.prompts[0][0].content


def test_chat_stream_false_is_plain_json() -> None:
    reply = chat({"message": "hello", "stream": False})
    assert reply.status == 200
    assert reply.body["reply"] == "Noted."


def test_chat_ignores_unknown_fields() -> None:
    reply = chat({"message": "hello", "temperature": 2, "model": "gpt-x"})
    assert reply.status == 200
    assert reply.body["model"] == "scripted-model"


CHAT_BAD_FIELDS = [
    pytest.param({}, "message", id="message-missing"),
    pytest.param({"message": None}, "message", id="message-null"),
    pytest.param({"message": ""}, "message", id="message-empty"),
    pytest.param({"message": "x" * 32_001}, "message", id="message-32001-chars"),
    pytest.param({"message": 5}, "message", id="message-number"),
    pytest.param({"message": ["hi"]}, "message", id="message-array"),
    pytest.param({"message": "hi", "sessionId": "bad id"}, "sessionId", id="sessionId-space"),
    pytest.param({"message": "hi", "sessionId": "a/b"}, "sessionId", id="sessionId-slash"),
    pytest.param({"message": "hi", "sessionId": "a#b"}, "sessionId", id="sessionId-hash"),
    pytest.param({"message": "hi", "sessionId": "sesión"}, "sessionId", id="sessionId-non-ascii"),
    pytest.param({"message": "hi", "sessionId": "abc\n"}, "sessionId", id="sessionId-trailing-newline"),
    pytest.param({"message": "hi", "sessionId": "A" * 129}, "sessionId", id="sessionId-129-chars"),
    pytest.param({"message": "hi", "sessionId": ""}, "sessionId", id="sessionId-empty"),
    pytest.param({"message": "hi", "sessionId": 42}, "sessionId", id="sessionId-number"),
    pytest.param({"message": "hi", "useMemory": "yes"}, "useMemory", id="useMemory-yes"),
    pytest.param({"message": "hi", "useMemory": "true"}, "useMemory", id="useMemory-string-true"),
    pytest.param({"message": "hi", "useMemory": 1}, "useMemory", id="useMemory-1"),
    pytest.param({"message": "hi", "stream": "no"}, "stream", id="stream-no"),
    pytest.param({"message": "hi", "stream": 0}, "stream", id="stream-0"),
    pytest.param({"message": "hi", "topK": -1}, "topK", id="topK-negative"),
    pytest.param({"message": "hi", "topK": 21}, "topK", id="topK-21"),
    pytest.param({"message": "hi", "topK": "3"}, "topK", id="topK-string"),
    pytest.param({"message": "hi", "topK": True}, "topK", id="topK-true"),
    pytest.param({"message": "hi", "topK": 1.5}, "topK", id="topK-float"),
]


@pytest.mark.parametrize(("body", "field"), CHAT_BAD_FIELDS)
def test_chat_with_bad_field_is_400_naming_it(fake_container: FakeContainer, body: dict[str, Any], field: str) -> None:
    assert_bad_request(chat(body), field)
    assert fake_container.conversations.turns == {}
    assert fake_container.chat_model.prompts == []


def test_chat_message_over_the_model_window_is_400_and_nothing_is_stored(fake_container: FakeContainer) -> None:
    reply = chat({"message": "word " * 5000})  # 25,000 chars, but 5,000 tokens for a 2,048-token model
    assert_bad_request(reply, "message")
    assert fake_container.conversations.turns == {}
    assert fake_container.chat_model.prompts == []


def test_chat_accepts_a_32000_char_message() -> None:
    reply = chat({"message": "x" * 32_000})
    assert reply.status == 200


# == GET /health ==================================================================================


def test_health_ok() -> None:
    reply = health()
    assert reply.status == 200
    assert reply.body == {"status": "ok"}


def test_health_is_503_with_retry_after_when_storage_is_down(fake_container: FakeContainer) -> None:
    fake_container.storage_down = True
    assert_retry_after(health())


# == every endpoint: bodies that are not a JSON object ============================================


@pytest.mark.parametrize(("handler_module", "route"), ENDPOINTS)
@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param("not json", id="text"),
        pytest.param("", id="empty"),
        pytest.param(None, id="absent"),
        pytest.param("{", id="truncated"),
        pytest.param("{'query': 'single quotes'}", id="single-quotes"),
        pytest.param('{"a": 1} trailing', id="trailing-garbage"),
        pytest.param('{"a": 1,}', id="trailing-comma"),
        pytest.param("[" * 100_000, id="deeply-nested-unclosed"),
        pytest.param("\ud800", id="lone-surrogate"),
    ],
)
def test_body_that_is_not_json_is_400(handler_module: ModuleType, route: str, raw_body: str | None) -> None:
    assert_bad_request(invoke_raw(handler_module, route, raw_body))


@pytest.mark.parametrize(("handler_module", "route"), ENDPOINTS)
@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param("[]", id="empty-array"),
        pytest.param('[{"action": "list"}]', id="array-of-object"),
        pytest.param('"a string"', id="string"),
        pytest.param("42", id="number"),
        pytest.param("-1.5e3", id="float"),
        pytest.param("null", id="null"),
        pytest.param("true", id="true"),
        pytest.param("[" * 5_000 + "]" * 5_000, id="deeply-nested-array"),
    ],
)
def test_body_that_is_json_but_not_an_object_is_400(handler_module: ModuleType, route: str, raw_body: str) -> None:
    assert_bad_request(invoke_raw(handler_module, route, raw_body))


@pytest.mark.parametrize(
    "constant",
    [pytest.param("NaN", id="NaN"), pytest.param("Infinity", id="Infinity"), pytest.param("-Infinity", id="-Infinity")],
)
def test_non_json_number_constants_are_rejected(fake_container: FakeContainer, constant: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259); accepting them stores values that no JSON reply can carry.
    raw = '{"action": "store", "content": "x", "metadata": {"score": %s}}' % constant  # noqa: UP031
    assert_bad_request(invoke_raw(MEMORY, "POST /memory", raw))
    assert fake_container.memory_repository.items == {}


@pytest.mark.parametrize(("handler_module", "route"), ENDPOINTS)
@pytest.mark.parametrize(
    "raw_body",
    [
        pytest.param("!!!not base64!!!", id="bad-alphabet"),
        pytest.param("eyJh", id="valid-base64-truncated-json"),
        pytest.param("abc", id="bad-padding"),
        pytest.param("e30=é", id="non-ascii"),
        pytest.param(base64.b64encode(b"\xff\xfe{}").decode(), id="invalid-utf8"),
        pytest.param(base64.b64encode(b'{"message": "caf\xe9"}').decode(), id="latin1-not-utf8"),
        pytest.param(base64.b64encode(b"[]").decode(), id="array"),
        pytest.param(base64.b64encode(b"").decode(), id="empty"),
    ],
)
def test_bad_base64_body_is_400(handler_module: ModuleType, route: str, raw_body: str) -> None:
    assert_bad_request(invoke_raw(handler_module, route, raw_body, base64_encoded=True))


def test_base64_encoded_body_is_decoded() -> None:
    raw = json.dumps({"action": "store", "content": "café ☕"}, ensure_ascii=False).encode("utf-8")
    reply = invoke_raw(MEMORY, "POST /memory", base64.b64encode(raw).decode("ascii"), base64_encoded=True)
    assert reply.status == 201
    assert memory({"action": "retrieve", "id": reply.body["id"]}).body["content"] == "café ☕"


def _padded_body(size: int, base: dict[str, Any]) -> str:
    """A JSON object of exactly `size` UTF-8 bytes: `base` plus an ignored padding field."""
    empty = json.dumps({**base, "padding": ""})
    body = json.dumps({**base, "padding": "p" * (size - len(empty.encode()))})
    assert len(body.encode()) == size
    return body


MINIMAL_BODIES = [
    pytest.param(MEMORY, "POST /memory", {"action": "list"}, id="memory"),
    pytest.param(SEARCH, "POST /search", {"query": "q"}, id="search"),
    pytest.param(CHAT, "POST /chat", {"message": "hi", "useMemory": False}, id="chat"),
]


@pytest.mark.parametrize(("handler_module", "route", "base"), MINIMAL_BODIES)
@pytest.mark.parametrize("base64_encoded", [False, True])
def test_body_over_256_kib_is_413(
    handler_module: ModuleType, route: str, base: dict[str, Any], base64_encoded: bool
) -> None:
    body = _padded_body(MAX_BODY_BYTES + 1, base)
    if base64_encoded:
        body = base64.b64encode(body.encode()).decode("ascii")
    assert_error(invoke_raw(handler_module, route, body, base64_encoded=base64_encoded), 413, "payload_too_large")


def test_body_over_256_kib_in_multibyte_characters_is_413() -> None:
    body = json.dumps({"action": "list", "padding": "é" * (MAX_BODY_BYTES // 2)}, ensure_ascii=False)
    assert len(body) < MAX_BODY_BYTES < len(body.encode())
    assert_error(invoke_raw(MEMORY, "POST /memory", body), 413, "payload_too_large")


@pytest.mark.parametrize(("handler_module", "route", "base"), MINIMAL_BODIES)
def test_body_of_exactly_256_kib_is_accepted(handler_module: ModuleType, route: str, base: dict[str, Any]) -> None:
    reply = invoke_raw(handler_module, route, _padded_body(MAX_BODY_BYTES, base))
    assert reply.status == 200, reply


def test_unknown_route_is_json_404() -> None:
    assert_error(invoke(MEMORY, "POST /nowhere", {"action": "list"}), 404)


def test_authorization_header_is_accepted_and_ignored_for_now() -> None:
    event = make_event("POST /memory", json.dumps({"action": "store", "content": "x"}))
    del event["headers"]["authorization"]
    assert call(MEMORY, event).status == 201
    event["headers"]["authorization"] = "Bearer something-else"
    assert call(MEMORY, event).status == 201


# == failing dependencies =========================================================================


def test_unavailable_repository_is_503_with_retry_after(fake_container: FakeContainer) -> None:
    fake_container.memory_repository.fail_with = UpstreamUnavailable("x")
    assert_retry_after(memory({"action": "store", "content": "hello"}))
    assert fake_container.memory_repository.items == {}


def _store_then_break_embedder(fake_container: FakeContainer) -> None:
    store("something to search")
    fake_container.embedder.fail_with = RuntimeError("boom")


@pytest.mark.parametrize(
    ("handler_module", "route", "body"),
    [
        pytest.param(MEMORY, "POST /memory", {"action": "store", "content": "something"}, id="store"),
        pytest.param(SEARCH, "POST /search", {"query": "something"}, id="search"),
        pytest.param(CHAT, "POST /chat", {"message": "something"}, id="chat"),
    ],
)
def test_unexpected_error_is_500_with_fixed_message(
    fake_container: FakeContainer, handler_module: ModuleType, route: str, body: dict[str, Any]
) -> None:
    _store_then_break_embedder(fake_container)
    assert_internal_error(invoke(handler_module, route, body))


def test_no_partial_record_when_embedder_fails_during_store(fake_container: FakeContainer) -> None:
    fake_container.embedder.fail_with = RuntimeError("boom")
    assert_internal_error(memory({"action": "store", "content": "never stored", "metadata": {"a": 1}}))
    assert fake_container.memory_repository.items == {}
    fake_container.embedder.fail_with = None
    assert list_ids() == []


def test_chat_model_unavailable_is_503_and_only_the_user_turn_is_stored(fake_container: FakeContainer) -> None:
    fake_container.chat_model.fail_with = UpstreamUnavailable("llm down")
    reply = chat({"message": "are you there?", "sessionId": "s-1"})
    assert_retry_after(reply)
    turns = fake_container.conversations.turns[(fake_container.settings.owner, "s-1")]
    assert [(turn.role, turn.content) for turn in turns] == [("user", "are you there?")]
    assert sum(len(session) for session in fake_container.conversations.turns.values()) == 1
