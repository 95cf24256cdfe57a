"""PAI over HTTP, as a client sees it (shared/API.md), against a real AWS emulator and the real
offline chat model; plus what lands in storage, read raw from the emulator."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.bootstrap import Container
from pai_core.models import Turn, parse_iso_utc
from pai_local.stack import RunningStack
from tests.integration.support import (
    INTERNAL_ERROR_BODY,
    ApiClient,
    HttpResult,
    RecordingChatModel,
    find_plaintext,
    prompt_text,
    scan_all,
    scripted_pieces,
)

pytestmark = pytest.mark.integration

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


# -- helpers -----------------------------------------------------------------------------------------


def token() -> str:
    return secrets.token_hex(5)


def unique_category(prefix: str) -> str:
    return f"{prefix}-{token()}"


def unique_session() -> str:
    return f"it-{secrets.token_urlsafe(12)}"


def store(api: ApiClient, content: str, *, category: str | None = None, metadata: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"action": "store", "content": content}
    if category is not None:
        body["category"] = category
    if metadata is not None:
        body["metadata"] = metadata
    result = api.post("/memory", body)
    assert result.status == 201, result
    return str(result.json["id"])


def retrieve(api: ApiClient, memory_id: str) -> HttpResult:
    return api.post("/memory", {"action": "retrieve", "id": memory_id})


def delete(api: ApiClient, memory_id: str) -> HttpResult:
    return api.post("/memory", {"action": "delete", "id": memory_id})


def search(api: ApiClient, query: str, **options: Any) -> list[dict[str, Any]]:
    result = api.post("/search", {"query": query, **options})
    assert result.status == 200, result
    results: list[dict[str, Any]] = result.json["results"]
    return results


def list_all(api: ApiClient, *, category: str | None, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every page of a listing; returns the items and how many pages it took."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        body: dict[str, Any] = {"action": "list", "limit": limit}
        if category is not None:
            body["category"] = category
        if cursor is not None:
            body["cursor"] = cursor
        result = api.post("/memory", body)
        assert result.status == 200, result
        assert len(result.json["items"]) <= limit
        items.extend(result.json["items"])
        pages += 1
        cursor = result.json["cursor"]
        if cursor is None:
            return items, pages
        assert isinstance(cursor, str)
        assert cursor
        assert pages < 50, "the cursor never ran out"


def chat(api: ApiClient, message: str, **options: Any) -> dict[str, Any]:
    result = api.post("/chat", {"message": message, **options})
    assert result.status == 200, result
    reply: dict[str, Any] = result.json
    return reply


def assert_error(result: HttpResult, status: int, code: str | None = None) -> dict[str, Any]:
    assert result.status == status, result
    assert result.headers["content-type"].startswith("application/json"), result.headers
    error = result.json["error"]
    assert isinstance(error["code"], str)
    assert re.fullmatch(r"[a-z0-9_]+", error["code"])
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, result
    return dict(error)


def raw_memory(aws: Callable[[str], Any], stack: RunningStack, memory_id: str) -> dict[str, Any]:
    response = aws("dynamodb").get_item(
        TableName=stack.settings.knowledge_table,
        Key={"owner": {"S": stack.settings.owner}, "id": {"S": memory_id}},
        ConsistentRead=True,
    )
    item: dict[str, Any] = response["Item"]
    return item


def count_memories(aws: Callable[[str], Any], stack: RunningStack) -> int:
    """The memories in the knowledge table (not its change logs, histories or documents, whose
    partitions are `{owner}#...`)."""
    items = scan_all(aws("dynamodb"), stack.settings.knowledge_table)
    return sum("#" not in item["owner"]["S"] for item in items)


# -- health and routing ------------------------------------------------------------------------------


def test_health_is_ok(api: ApiClient) -> None:
    result = api.get("/health")
    assert result.status == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), [("GET", "/no-such-route"), ("POST", "/nothing/here")])
def test_unknown_route_is_a_json_404(api: ApiClient, method: str, path: str) -> None:
    body = b"{}" if method == "POST" else None
    assert_error(api.request(method, path, body=body), 404)


@pytest.mark.parametrize(("method", "path", "allowed"), [("POST", "/health", "GET"), ("GET", "/memory", "POST")])
def test_a_known_route_with_another_method_is_a_json_405(api: ApiClient, method: str, path: str, allowed: str) -> None:
    body = b"{}" if method == "POST" else None
    result = api.request(method, path, body=body)
    assert_error(result, 405, "method_not_allowed")
    assert result.headers["allow"] == allowed


# -- bad requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/memory", b"{not json", 400, None),
        ("/memory", b'["store"]', 400, None),
        ("/memory", b"", 400, None),
        ("/memory", {"action": "remember", "content": "x"}, 400, "action"),
        ("/memory", {"content": "no action"}, 400, "action"),
        ("/memory", {"action": "store"}, 400, "content"),
        ("/memory", {"action": "store", "content": ""}, 400, "content"),
        ("/memory", {"action": "store", "content": "x", "category": "Not Valid!"}, 400, "category"),
        ("/memory", {"action": "store", "content": "x", "metadata": ["not", "an", "object"]}, 400, "metadata"),
        ("/memory", {"action": "list", "limit": 0}, 400, "limit"),
        ("/memory", {"action": "list", "limit": "ten"}, 400, "limit"),
        ("/memory", {"action": "list", "cursor": "!!not-a-cursor!!"}, 400, "cursor"),
        ("/memory", {"action": "retrieve"}, 400, "id"),
        ("/search", {"topK": 3}, 400, "query"),
        ("/search", {"query": "x", "topK": 51}, 400, "topK"),
        ("/search", {"query": "x", "minScore": 1.5}, 400, "minScore"),
        ("/chat", {"message": "hi", "sessionId": "has spaces"}, 400, "sessionId"),
        ("/chat", {"message": "hi", "useMemory": "yes"}, 400, "useMemory"),
        ("/chat", {}, 400, "message"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    api: ApiClient, path: str, body: dict[str, Any] | bytes, status: int, field: str | None
) -> None:
    error = assert_error(api.post(path, body), status)
    if field is not None:
        assert error.get("field") == field or field in error["message"], error


def test_body_over_256_kib_is_413(api: ApiClient) -> None:
    content = "x" * (256 * 1024 + 1)
    assert_error(api.post("/memory", {"action": "store", "content": content}), 413)


# Raw bodies as a client's JSON encoder writes a lone surrogate: the escape text, in ASCII bytes.
UNPAIRED_SURROGATES = [
    ("/memory", rb'{"action": "store", "content": "My cat \ud800 is called Miso."}', "content"),
    ("/memory", rb'{"action": "store", "content": "\udc00"}', "content"),
    ("/memory", rb'{"action": "store", "content": "x", "category": "pets\ud800"}', "category"),
    ("/memory", rb'{"action": "store", "content": "x", "metadata": {"note": "v\udfff"}}', "metadata.note"),
    ("/memory", rb'{"action": "store", "content": "x", "metadata": {"k\ud800": "v"}}', "metadata.k\\ud800"),
    ("/memory", rb'{"action": "store", "content": "x", "metadata": {"a": [1, {"b": "\udbff"}]}}', "metadata.a[1].b"),
    ("/memory", rb'{"action": "retrieve", "id": "\ud800"}', "id"),
    ("/memory", rb'{"action": "delete", "id": "abc\udc00"}', "id"),
    ("/memory", rb'{"action": "list", "category": "\ud800"}', "category"),
    ("/memory", rb'{"action": "list", "cursor": "eyJpZCI6\ud800"}', "cursor"),
    ("/memory", rb'{"action": "\ud800store", "content": "x"}', "action"),
    ("/search", rb'{"query": "what is my cat called? \ud800"}', "query"),
    ("/search", rb'{"query": "x", "category": "\udc00"}', "category"),
    ("/chat", rb'{"message": "Hello \ud800 there", "useMemory": false}', "message"),
    ("/chat", rb'{"message": "hi", "sessionId": "s\udc00"}', "sessionId"),
    ("/account", rb'{"action": "forget", "confirm": "forget everything\ud800"}', "confirm"),
    ("/account", rb'{"action": "export", "unknown": "\ud800"}', "unknown"),
]


@pytest.mark.parametrize(
    ("path", "raw", "field"), [pytest.param(*case, id=f"{case[0]}-{case[2]}") for case in UNPAIRED_SURROGATES]
)
def test_an_unpaired_surrogate_is_400_naming_the_field(
    api: ApiClient, aws: Callable[[str], Any], stack: RunningStack, path: str, raw: bytes, field: str
) -> None:
    before = count_memories(aws, stack)
    error = assert_error(api.post(path, raw), 400, "invalid_request")
    assert error["field"] == field, error
    assert count_memories(aws, stack) == before


def test_a_forged_cursor_is_400_naming_cursor(api: ApiClient) -> None:
    category = unique_category("cursor")
    for index in range(3):
        store(api, f"Page filler {index} ({token()})", category=category)
    first = api.post("/memory", {"action": "list", "category": category, "limit": 1})
    assert first.status == 200, first
    real = first.json["cursor"]
    assert isinstance(real, str)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    forged = [
        {"category": category, "cursor": b64(b'{"id":"x","ts":true}')},  # the shape that used to be a 503
        {"category": category, "cursor": b64(b'{"id":"0192f1c2a3b40123456789abcdef0123","ts":true}')},
        {"category": category, "cursor": b64(b'{"id":"0192f1c2a3b40123456789abcdef0123","ts":"1"}')},
        {"cursor": real},  # a real cursor of a category listing, sent to the owner's listing
        {"category": category, "cursor": real + "=="},
        {"category": category, "cursor": "x" * 2048},
    ]
    for fields in forged:
        result = api.post("/memory", {"action": "list", **fields})
        error = assert_error(result, 400, "invalid_request")
        assert error["field"] == "cursor", (fields, error)
    # The real one still pages on.
    second = api.post("/memory", {"action": "list", "category": category, "limit": 1, "cursor": real})
    assert second.status == 200, second
    assert second.json["items"][0]["id"] != first.json["items"][0]["id"]


# -- memories ----------------------------------------------------------------------------------------


def test_store_then_retrieve_round_trips_every_field(api: ApiClient) -> None:
    content = f"Grüße aus Köln 🌧 — the umbrella is in the hallway cupboard ({token()})"
    metadata = {"source": "integration", "tags": ["home", "weather"], "nested": {"n": 3, "ok": True}}
    category = unique_category("home")
    stored = api.post("/memory", {"action": "store", "content": content, "category": category, "metadata": metadata})
    assert stored.status == 201, stored
    assert set(stored.json) == {"id", "category", "createdAt"}
    assert stored.json["category"] == category
    assert ISO_UTC.match(stored.json["createdAt"])
    created = parse_iso_utc(stored.json["createdAt"])
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)

    result = retrieve(api, stored.json["id"])
    assert result.status == 200, result
    assert result.json == {
        "id": stored.json["id"],
        "content": content,
        "category": category,
        "metadata": metadata,
        "createdAt": stored.json["createdAt"],
        "updatedAt": stored.json["createdAt"],
        "origin": "api",
    }


def test_store_defaults_to_general_and_empty_metadata(api: ApiClient) -> None:
    memory_id = store(api, f"The recycling goes out on Tuesdays ({token()})")
    result = retrieve(api, memory_id)
    assert result.status == 200, result
    assert result.json["category"] == "general"
    assert result.json["metadata"] == {}


def test_unknown_id_is_404(api: ApiClient) -> None:
    unknown = "0" * 12 + secrets.token_hex(10)
    assert_error(retrieve(api, unknown), 404, "not_found")
    assert_error(delete(api, unknown), 404, "not_found")


def test_list_pages_with_a_cursor_newest_first(api: ApiClient) -> None:
    category = unique_category("paging")
    stored = []
    for number in range(5):
        stored.append(store(api, f"Paging note number {number}", category=category))
        time.sleep(0.003)  # distinct creation milliseconds

    items, pages = list_all(api, category=category, limit=2)

    ids = [item["id"] for item in items]
    assert ids == list(reversed(stored)), "every memory once, newest first"
    assert pages == 3
    assert [item["content"] for item in items] == [f"Paging note number {n}" for n in range(4, -1, -1)]
    assert all(item["category"] == category for item in items)
    created = [parse_iso_utc(item["createdAt"]) for item in items]
    assert created == sorted(created, reverse=True)


def test_list_without_category_is_newest_first(api: ApiClient) -> None:
    older = store(api, f"Older unfiled note ({token()})", category=unique_category("a"))
    time.sleep(0.003)
    newer = store(api, f"Newer unfiled note ({token()})", category=unique_category("b"))

    result = api.post("/memory", {"action": "list", "limit": 2})
    assert result.status == 200, result
    assert [item["id"] for item in result.json["items"]] == [newer, older]
    assert isinstance(result.json["cursor"], str), "there are more memories than one page of 2"

    # Across every memory of the user, pages keep the order and never repeat or skip one.
    items, _ = list_all(api, category=None, limit=7)
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids))
    assert ids[:2] == [newer, older]
    created = [parse_iso_utc(item["createdAt"]) for item in items]
    assert created == sorted(created, reverse=True)


# -- search ------------------------------------------------------------------------------------------

CAT = "My cat is called Miso."
DISTRACTORS = (
    "I am allergic to peanuts.",
    "I work as a dentist in Lisbon.",
    "My favourite colour is dark green.",
    "I play the cello on Sunday mornings.",
)


@pytest.fixture(scope="module")
def personal_facts(api: ApiClient) -> dict[str, str]:
    """Memories in a category of their own, plus one in another category; content -> id."""
    category = unique_category("facts")
    ids = {text: store(api, text, category=category) for text in (CAT, *DISTRACTORS)}
    ids["category"] = category
    ids["dog"] = store(api, "My dog is named Pepper.", category=unique_category("other"))
    return ids


def test_search_ranks_the_semantically_right_memory_first(api: ApiClient, personal_facts: dict[str, str]) -> None:
    results = search(api, "what is my pet's name?", category=personal_facts["category"], topK=5)

    assert results[0]["id"] == personal_facts[CAT]
    assert results[0]["content"] == CAT
    assert set(results[0]) == {
        "id",
        "content",
        "category",
        "metadata",
        "createdAt",
        "updatedAt",
        "origin",
        "score",
        "kind",
    }
    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= score <= 1.0 for score in scores)
    assert len(results) == 5

    allergy = search(api, "Which foods must I avoid eating?", category=personal_facts["category"], topK=1)
    assert [hit["content"] for hit in allergy] == ["I am allergic to peanuts."]


def test_search_category_filter_top_k_and_min_score(api: ApiClient, personal_facts: dict[str, str]) -> None:
    question = "what is my pet's name?"
    everywhere = search(api, question, topK=2)
    assert {hit["id"] for hit in everywhere} == {personal_facts[CAT], personal_facts["dog"]}

    in_category = search(api, question, category=personal_facts["category"], topK=50)
    assert {hit["id"] for hit in in_category} == {personal_facts[text] for text in (CAT, *DISTRACTORS)}
    assert all(hit["category"] == personal_facts["category"] for hit in in_category)

    threshold = (in_category[0]["score"] + in_category[1]["score"]) / 2
    above = search(api, question, category=personal_facts["category"], topK=50, minScore=threshold)
    assert [hit["id"] for hit in above] == [personal_facts[CAT]]
    assert search(api, question, category=personal_facts["category"], minScore=1.0) == []
    assert search(api, question, category=unique_category("empty")) == []


def test_delete_removes_a_memory_from_retrieve_list_and_search(api: ApiClient) -> None:
    category = unique_category("forget")
    content = f"The spare house key is under the blue flowerpot by the door ({token()})."
    memory_id = store(api, content, category=category)
    assert search(api, "where is the spare house key hidden?", topK=1)[0]["id"] == memory_id

    result = delete(api, memory_id)
    assert result.status == 200, result
    assert result.json == {"id": memory_id, "deleted": True}

    assert_error(retrieve(api, memory_id), 404, "not_found")
    assert list_all(api, category=category, limit=10)[0] == []
    assert memory_id not in {hit["id"] for hit in search(api, "where is the spare house key hidden?", topK=50)}
    assert_error(delete(api, memory_id), 404, "not_found")


# -- chat --------------------------------------------------------------------------------------------


def test_chat_answers_with_the_stored_memory_in_its_prompt(
    api: ApiClient, chat_model: RecordingChatModel, personal_facts: dict[str, str]
) -> None:
    # personal_facts: other memories exist, so the fact has to win the retrieval, not just be there.
    fact = "My grandmother's apple pie recipe uses exactly seven cardamom pods."
    memory_id = store(api, fact, category=unique_category("recipes"))
    asked_before = chat_model.prompt_count()

    result = api.post("/chat", {"message": "How many cardamom pods go in my grandmother's apple pie?"})

    assert result.status == 200, result
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) == {"sessionId", "reply", "sources", "model", "usage", "learning"}
    assert SESSION_ID.match(body["sessionId"])
    assert isinstance(body["reply"], str)
    assert isinstance(body["model"], str)
    assert body["model"]
    assert body["usage"]["inputTokens"] > 0
    assert body["usage"]["outputTokens"] > 0
    assert memory_id in [source["id"] for source in body["sources"]]
    assert all(set(source) == {"kind", "id", "score"} and source["kind"] == "memory" for source in body["sources"])
    assert len(body["sources"]) <= 4

    assert chat_model.prompt_count() == asked_before + 1
    system, *_, user = chat_model.last_prompt
    assert system.role == "system"
    assert f"<memory>{fact}</memory>" in system.content
    assert user.role == "user"
    assert user.content == "How many cardamom pods go in my grandmother's apple pie?"


def test_chat_without_memory_sends_no_memories(api: ApiClient, chat_model: RecordingChatModel) -> None:
    with chat_model.answering("I do not know."):
        body = chat(api, "How many cardamom pods go in my grandmother's apple pie?", useMemory=False)
    assert body["sources"] == []
    assert "cardamom pods." not in chat_model.last_prompt[0].content
    assert "<memory" not in chat_model.last_prompt[0].content


def test_chat_stream_sends_server_sent_events(stream_api: ApiClient, chat_model: RecordingChatModel) -> None:
    session = unique_session()
    reply = "Hello there, it is good to hear from you."
    with chat_model.answering(reply):
        turn = {"message": "Say hello.", "sessionId": session, "stream": True, "useMemory": False}
        result = stream_api.post("/chat", turn)

    assert result.status == 200, result
    assert result.headers["content-type"].startswith("text/event-stream")
    assert isinstance(result.json, str)
    events = []
    for block in result.json.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    assert [name for name, _ in events] == ["delta"] * len(scripted_pieces(reply)) + ["done"]
    # Each piece the model produced is one event, in order, then the summary.
    assert [data for _, data in events[:-1]] == [{"text": piece} for piece in scripted_pieces(reply)]
    last = events[-1][1]
    assert result.headers["transfer-encoding"] == "chunked"  # written as produced, not buffered
    assert set(last) == {"sessionId", "reply", "sources", "model", "usage", "learning"}
    assert last["sessionId"] == session
    assert last["reply"] == reply
    assert last["model"] == chat_model.name
    assert last["sources"] == []
    assert last["usage"]["inputTokens"] > 0
    assert chat_model.last_prompt[-1].content == "Say hello."


def test_session_history_carries_across_turns(
    api: ApiClient, chat_model: RecordingChatModel, conversations: DynamoConversationRepository, stack: RunningStack
) -> None:
    session = unique_session()
    first_message = "My name is Zorblax."
    replies = ["Nice to meet you, Zorblax.", "A houseboat sounds lovely.", "Your name is Zorblax."]
    with chat_model.answering(*replies):
        first = chat(api, first_message, sessionId=session, useMemory=False)
        chat(api, "I live on a houseboat.", sessionId=session, useMemory=False)
        third = chat(api, "What is my name?", sessionId=session, useMemory=False)
    assert first["sessionId"] == session
    assert first["reply"] == replies[0]
    assert third["sessionId"] == session

    prompt = chat_model.last_prompt
    assert prompt[0].role == "system"
    assert [(m.role, m.content) for m in prompt[1:]] == [
        ("user", first_message),
        ("assistant", replies[0]),
        ("user", "I live on a houseboat."),
        ("assistant", replies[1]),
        ("user", "What is my name?"),
    ]
    stored = conversations.recent(stack.settings.owner, session, now=datetime.now(UTC), limit=10)
    assert [(turn.role, turn.content) for turn in stored] == [(m.role, m.content) for m in prompt[1:]] + [
        ("assistant", replies[2])
    ]

    other = chat(api, "What is my name?", sessionId=unique_session(), useMemory=False)
    assert other["sessionId"] != session
    assert "Zorblax" not in prompt_text(chat_model.last_prompt)
    assert [(m.role, m.content) for m in chat_model.last_prompt[1:]] == [("user", "What is my name?")]


def test_chat_without_session_id_starts_a_new_session_each_time(api: ApiClient, chat_model: RecordingChatModel) -> None:
    with chat_model.answering("Noted: 271828.", "I do not know it."):
        first = chat(api, "My favourite number is 271828.", useMemory=False)
        second = chat(api, "What is my favourite number?", useMemory=False)
    assert first["sessionId"] != second["sessionId"]
    assert "271828" not in prompt_text(chat_model.last_prompt)
    assert [(m.role, m.content) for m in chat_model.last_prompt[1:]] == [("user", "What is my favourite number?")]


def test_failed_model_call_is_503_and_keeps_only_the_user_turn(
    api: ApiClient, chat_model: RecordingChatModel, conversations: DynamoConversationRepository, stack: RunningStack
) -> None:
    session = unique_session()
    message = f"Will this be answered? ({token()})"
    chat_model.fail_next()

    result = api.post("/chat", {"message": message, "sessionId": session, "useMemory": False})

    assert_error(result, 503, "service_unavailable")
    assert int(result.headers["retry-after"]) >= 1
    turns = conversations.recent(stack.settings.owner, session, now=datetime.now(UTC), limit=10)
    assert [(turn.role, turn.content) for turn in turns] == [("user", message)]

    # The client retries: the user's turn is not stored, nor put in the prompt, a second time.
    with chat_model.answering("Yes, it is."):
        retried = api.post("/chat", {"message": message, "sessionId": session, "useMemory": False})
    assert retried.status == 200, retried
    turns = conversations.recent(stack.settings.owner, session, now=datetime.now(UTC), limit=10)
    assert [turn.role for turn in turns] == ["user", "assistant"]
    assert prompt_text(chat_model.last_prompt).count(message) == 1


# -- what is at rest ---------------------------------------------------------------------------------


def test_no_plaintext_at_rest(
    api: ApiClient, aws: Callable[[str], Any], stack: RunningStack, chat_model: RecordingChatModel
) -> None:
    mark = token()
    content = f"My locker code at the Zürich gym is Quokka{mark}, beside the sauna."
    metadata_key = f"hiddenKey{mark}"
    metadata_value = f"Straße-Geheimnis-{mark}"
    chat_message = f"Please remember the codeword Wombat{mark} for me."
    reply = f"I will keep the codeword Kookaburra{mark} in mind."  # the assistant's turn is stored too
    memory_ids = [
        store(api, content, metadata={metadata_key: metadata_value, "plain": f"note{mark}"}),
        store(api, f"Second secret: Numbat{mark}", category=unique_category("secrets")),
    ]
    with chat_model.answering(reply):
        assert chat(api, chat_message, sessionId=unique_session())["reply"] == reply
    assert chat_model.last_prompt[-1].content == chat_message

    needles = [
        f"Quokka{mark}",
        content,
        metadata_key,
        metadata_value,
        f"note{mark}",
        f"Numbat{mark}",
        f"Wombat{mark}",
        chat_message,
        f"Kookaburra{mark}",
        reply,
    ]
    dynamodb = aws("dynamodb")
    tables = [stack.settings.knowledge_table, stack.settings.conversations_table]
    leaks: list[str] = []
    counts = {}
    for table in tables:
        items = scan_all(dynamodb, table)
        counts[table] = len(items)
        for item in items:
            leaks += find_plaintext(item, needles, where=table)
    assert counts[stack.settings.conversations_table] >= 2, "the chat's turns are stored"
    assert not leaks, leaks

    for memory_id, plaintext in zip(memory_ids, [content, f"Second secret: Numbat{mark}"], strict=True):
        item = raw_memory(aws, stack, memory_id)
        for attribute in ("encryptedContent", "encryptedMetadata"):
            value = item[attribute]["B"]
            assert isinstance(value, bytes)
            assert value[:1] == b"\x02", "a version-2 envelope frame (sealed under a branch key)"
            assert value != plaintext.encode("utf-8")
        assert len(item["encryptedContent"]["B"]) > len(plaintext.encode("utf-8")) + 28  # salt, nonce and tag
        assert set(item) == {
            "owner",
            "id",
            "category",
            "ownerCategory",
            "timestamp",
            "createdAt",
            "origin",
            "version",
            "encryptedContent",
            "encryptedMetadata",
            "encryptedEmbedding",
        }
        # Not a byte of the vector in the clear: even a 16-byte run of it would show.
        vector = stack.container.embedder.embed([plaintext])[0].astype("float32").tobytes()
        raw = repr(item).encode() + b"".join(v["B"] for v in item.values() if "B" in v)
        assert not any(vector[i : i + 16] in raw for i in range(0, len(vector) - 16, 16))

    s3 = aws("s3")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=stack.resources.bucket):
        for version in page.get("Versions", []):
            obj = s3.get_object(Bucket=stack.resources.bucket, Key=version["Key"], VersionId=version["VersionId"])
            assert not find_plaintext(obj["Body"].read(), needles, where=version["Key"])


@pytest.mark.parametrize("source", ["another record's content", "the same record's metadata"])
def test_ciphertext_is_bound_to_its_record(
    api: ApiClient, aws: Callable[[str], Any], stack: RunningStack, source: str
) -> None:
    category = unique_category("tamper")
    secret = f"The safe combination is 31-{token()}."
    donor = store(api, secret, category=category, metadata={"origin": f"donor-{token()}"})
    victim = store(api, "Bananas ripen faster next to apples.", category=category)
    dynamodb = aws("dynamodb")
    item = raw_memory(aws, stack, victim)
    if source == "another record's content":
        item["encryptedContent"] = raw_memory(aws, stack, donor)["encryptedContent"]
    else:
        item["encryptedContent"] = item["encryptedMetadata"]
    try:
        dynamodb.put_item(TableName=stack.settings.knowledge_table, Item=item)

        result = retrieve(api, victim)

        assert result.status == 500, result
        assert result.json == INTERNAL_ERROR_BODY
        assert "combination" not in json.dumps(result.json)
        assert "origin" not in json.dumps(result.json)
        donor_result = retrieve(api, donor)
        assert donor_result.status == 200, donor_result
        assert donor_result.json["content"] == secret
    finally:
        # A record that cannot be decrypted would fail every later listing or search that meets it.
        assert delete(api, victim).status == 200
    assert_error(retrieve(api, victim), 404, "not_found")


def test_conversation_turn_is_bound_to_its_session(
    api: ApiClient, aws: Callable[[str], Any], stack: RunningStack, chat_model: RecordingChatModel
) -> None:
    donor_session, victim_session = unique_session(), unique_session()
    with chat_model.answering("Noted.", "Hello."):
        chat(api, f"My locker number is {token()}.", sessionId=donor_session, useMemory=False)
        chat(api, "Hello there.", sessionId=victim_session, useMemory=False)
    dynamodb = aws("dynamodb")
    table = stack.settings.conversations_table
    owner = stack.settings.owner

    def turns(session: str) -> list[dict[str, Any]]:
        response = dynamodb.query(
            TableName=table,
            KeyConditionExpression="sessionId = :sid",
            ExpressionAttributeValues={":sid": {"S": f"{owner}#{session}"}},
            ConsistentRead=True,
        )
        items: list[dict[str, Any]] = response["Items"]
        return items

    donor_user = next(item for item in turns(donor_session) if item["role"]["S"] == "user")
    victim_items = turns(victim_session)
    victim_user = next(item for item in victim_items if item["role"]["S"] == "user")
    victim_user["encryptedContent"] = donor_user["encryptedContent"]
    try:
        dynamodb.put_item(TableName=table, Item=victim_user)
        result = api.post("/chat", {"message": "What did I say?", "sessionId": victim_session, "useMemory": False})
        assert result.status == 500, result
        assert result.json == INTERNAL_ERROR_BODY
    finally:
        for item in turns(victim_session):
            dynamodb.delete_item(TableName=table, Key={"sessionId": item["sessionId"], "timestamp": item["timestamp"]})


# -- conversation lifetime ---------------------------------------------------------------------------


def test_expired_turns_are_not_part_of_the_conversation(
    api: ApiClient,
    chat_model: RecordingChatModel,
    conversations: DynamoConversationRepository,
    aws: Callable[[str], Any],
    stack: RunningStack,
) -> None:
    owner = stack.settings.owner
    session = unique_session()
    now = datetime.now(UTC)
    expired = f"Long ago I mentioned the password Platypus{token()}."
    alive = f"Yesterday I said my train leaves at {token()}."
    conversations.append(owner, session, Turn(role="user", content=expired, at=now - timedelta(hours=25)))
    conversations.append(owner, session, Turn(role="user", content=alive, at=now - timedelta(hours=23)))
    # Emulators, like DynamoDB for up to days, keep expired items: the row is still there.
    stored = aws("dynamodb").query(
        TableName=stack.settings.conversations_table,
        KeyConditionExpression="sessionId = :sid",
        ExpressionAttributeValues={":sid": {"S": f"{owner}#{session}"}},
        ConsistentRead=True,
    )["Items"]
    assert len(stored) == 2
    assert min(int(item["ttl"]["N"]) for item in stored) < time.time()

    with chat_model.answering("You told me when your train leaves."):
        chat(api, "What did I tell you before?", sessionId=session, useMemory=False)

    sent = prompt_text(chat_model.last_prompt)
    assert expired not in sent
    assert "Platypus" not in sent
    assert alive in sent
    turns = conversations.recent(owner, session, now=datetime.now(UTC), limit=10)
    contents = [turn.content for turn in turns]
    assert contents == [alive, "What did I tell you before?", "You told me when your train leaves."]


def test_turn_past_its_ttl_is_ignored_before_dynamodb_deletes_it(
    api: ApiClient,
    chat_model: RecordingChatModel,
    conversations: DynamoConversationRepository,
    stack: RunningStack,
) -> None:
    """A turn whose `ttl` has passed is dead even when its timestamp is recent (written by a
    deployment with a shorter lifetime): only the ttl attribute decides."""
    owner = stack.settings.owner
    session = unique_session()
    short_lived = DynamoConversationRepository(
        stack.container.dynamodb,
        stack.settings.conversations_table,
        stack.container.cipher,
        context_name=f"pai-conversations-{stack.settings.env}",
        ttl_seconds=60,
    )
    stale = f"This expired a minute ago: Echidna{token()}."
    short_lived.append(owner, session, Turn(role="user", content=stale, at=datetime.now(UTC) - timedelta(minutes=2)))
    fresh = f"This one is fresh: Bilby{token()}."
    conversations.append(owner, session, Turn(role="user", content=fresh, at=datetime.now(UTC)))

    with chat_model.answering("Nothing to add."):
        chat(api, "Anything to add?", sessionId=session, useMemory=False)

    sent = prompt_text(chat_model.last_prompt)
    assert stale not in sent
    assert fresh in sent
    contents = [t.content for t in conversations.recent(owner, session, now=datetime.now(UTC), limit=10)]
    assert stale not in contents
    assert fresh in contents


# -- failures ----------------------------------------------------------------------------------------


def test_store_failing_midway_leaves_no_record(
    api: ApiClient,
    aws: Callable[[str], Any],
    stack: RunningStack,
    installed: Callable[[Container], None],
) -> None:
    """KMS refuses the data key after the content is embedded and before anything is written.

    The key alias the functions address (alias/pai-{env}) is deleted for the request, as by a
    mistaken `aws kms delete-alias`. (Disabling the key would be the natural fault, but moto's
    GenerateDataKey ignores the key state; a missing alias fails on every emulator.)"""
    # A composition root with an empty data-key cache, so this store has to ask KMS; the session's
    # container holds a cached data key for the same partition and would not call KMS at all.
    fresh = Container(stack.settings, chat_model=stack.container.chat_model)
    fresh.embedder = stack.container.embedder  # share the loaded model
    kms = aws("kms")
    alias = stack.settings.kms_key_id
    assert alias.startswith("alias/")
    key_id = kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    category = unique_category("fails")
    content = f"This must never be half-written ({token()})."
    before = count_memories(aws, stack)

    installed(fresh)
    kms.delete_alias(AliasName=alias)
    try:
        result = api.post("/memory", {"action": "store", "content": content, "category": category})
    finally:
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)

    # A key that is gone is a dependency failure, not our bug: 503, and the caller may retry.
    error = assert_error(result, 503, "service_unavailable")
    assert int(result.headers["retry-after"]) >= 1
    assert "never be half-written" not in json.dumps(error)
    assert count_memories(aws, stack) == before
    assert list_all(api, category=category, limit=10)[0] == []

    # The same request on the same path works once the alias is back: KMS was the only problem.
    retried = api.post("/memory", {"action": "store", "content": content, "category": category})
    assert retried.status == 201, retried
    assert count_memories(aws, stack) == before + 1
    assert [item["content"] for item in list_all(api, category=category, limit=10)[0]] == [content]
