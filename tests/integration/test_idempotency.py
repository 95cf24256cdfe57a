"""Idempotency-Key over HTTP against the emulator (shared/API.md, "Common"): a repeat stores nothing
twice and answers what the first request answered, a reused key is a 409, keys are per user, and
the idempotency table holds no plaintext of what was stored or said. A forgotten user's records
are not deleted (their ids are hashes, nothing finds them by user) but can no longer be read, and
the table's TTL removes them within a day."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from pai_core.bootstrap import Container
from pai_core.crypto import KeyMaterialDestroyed
from pai_core.idempotency import SealedAnswers
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient, RecordingChatModel, find_plaintext, scan_all

pytestmark = pytest.mark.integration


def new_key() -> str:
    return f"it-{secrets.token_urlsafe(16)}"


def listed(api: ApiClient, category: str) -> list[dict[str, Any]]:
    result = api.post("/memory", {"action": "list", "category": category, "limit": 100})
    assert result.status == 200, result
    items: list[dict[str, Any]] = result.json["items"]
    return items


def store(api: ApiClient, content: str, category: str, key: str) -> Any:
    return api.post(
        "/memory", {"action": "store", "content": content, "category": category}, headers={"Idempotency-Key": key}
    )


@pytest.fixture(scope="module")
def other_user(api: ApiClient, stack: RunningStack) -> ApiClient:
    issued = stack.container.api_keys.issue(f"idem-{secrets.token_hex(4)}", "idempotency tests")
    return api.with_key(issued.key)


def idempotency_items(aws: Callable[[str], Any], stack: RunningStack) -> list[dict[str, Any]]:
    return scan_all(aws("dynamodb"), stack.settings.idempotency_table)


def test_a_repeated_store_answers_the_same_and_stores_once(api: ApiClient) -> None:
    category, key = f"idem-{secrets.token_hex(4)}", new_key()
    first = store(api, "Parking spot 42 on level B", category, key)
    again = store(api, "Parking spot 42 on level B", category, key)
    assert first.status == 201, first
    assert (again.status, again.json) == (201, first.json)
    assert [item["id"] for item in listed(api, category)] == [first.json["id"]]


def test_a_repeated_store_many_stores_its_items_once(api: ApiClient) -> None:
    category, key = f"idem-{secrets.token_hex(4)}", new_key()
    body = {"action": "store_many", "items": [{"content": f"imported {n}", "category": category} for n in range(3)]}
    first = api.post("/memory", body, headers={"Idempotency-Key": key})
    again = api.post("/memory", body, headers={"Idempotency-Key": key})
    assert first.status == 201, first
    assert (again.status, again.json) == (201, first.json)
    assert sorted(item["content"] for item in listed(api, category)) == ["imported 0", "imported 1", "imported 2"]


def test_a_repeated_update_keeps_one_new_version(api: ApiClient) -> None:
    category, key = f"idem-{secrets.token_hex(4)}", new_key()
    stored = store(api, "My bike is blue", category, new_key())
    memory_id = stored.json["id"]
    body = {"action": "update", "id": memory_id, "content": "My bike is red"}
    first = api.post("/memory", body, headers={"Idempotency-Key": key})
    again = api.post("/memory", body, headers={"Idempotency-Key": key})
    assert first.status == 200, first
    assert (again.status, again.json) == (200, first.json)
    history = api.post("/memory", {"action": "history", "id": memory_id})
    assert [version["content"] for version in history.json["versions"]] == ["My bike is blue", "My bike is red"]


def test_the_same_key_with_another_body_is_a_409(api: ApiClient) -> None:
    category, key = f"idem-{secrets.token_hex(4)}", new_key()
    assert store(api, "first wording", category, key).status == 201
    reused = store(api, "second wording", category, key)
    assert reused.status == 409, reused
    assert reused.json["error"]["code"] == "idempotency_key_reused"
    assert [item["content"] for item in listed(api, category)] == ["first wording"]


def test_two_users_with_the_same_key_are_independent(api: ApiClient, other_user: ApiClient) -> None:
    category, key = f"idem-{secrets.token_hex(4)}", new_key()
    mine = store(api, "mine", category, key)
    theirs = store(other_user, "theirs, a different body", category, key)
    assert (mine.status, theirs.status) == (201, 201)
    assert mine.json["id"] != theirs.json["id"]
    assert [item["content"] for item in listed(api, category)] == ["mine"]
    assert [item["content"] for item in listed(other_user, category)] == ["theirs, a different body"]


@pytest.mark.parametrize("value", ["x" * 129, "caf\u00e9", "tab\there"])
def test_a_bad_header_is_a_400_naming_it(api: ApiClient, value: str) -> None:
    category = f"idem-{secrets.token_hex(4)}"
    result = api.request(
        "POST",
        "/memory",
        body=json.dumps({"action": "store", "content": "never stored", "category": category}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": value},
    )
    assert result.status == 400, result
    assert result.json["error"]["field"] == "Idempotency-Key"
    assert listed(api, category) == []


def test_actions_that_store_nothing_do_not_act_on_the_header(api: ApiClient) -> None:
    category, key = f"idem-{secrets.token_hex(4)}", new_key()
    first = api.post("/memory", {"action": "list", "category": category}, headers={"Idempotency-Key": key})
    assert (first.status, first.json["items"]) == (200, [])
    stored = store(api, "listed after all", category, new_key())
    again = api.post("/memory", {"action": "list", "category": category}, headers={"Idempotency-Key": key})
    assert again.status == 200
    assert [item["id"] for item in again.json["items"]] == [stored.json["id"]]
    malformed = api.post("/memory", {"action": "list"}, headers={"Idempotency-Key": "x" * 200})
    assert malformed.status == 400
    assert malformed.json["error"]["field"] == "Idempotency-Key"


def test_a_repeated_chat_answers_the_first_reply_and_asks_the_model_once(
    api: ApiClient, chat_model: RecordingChatModel
) -> None:
    key, session = new_key(), f"idem-{secrets.token_urlsafe(8)}"
    body = {"message": "What is the gate code?", "sessionId": session, "useMemory": False}
    with chat_model.answering("The gate code is 7391, as you told me.", "a second answer that must not be used"):
        first = api.post("/chat", body, headers={"Idempotency-Key": key})
        asked = chat_model.prompt_count()
        again = api.post("/chat", body, headers={"Idempotency-Key": key})
    assert first.status == 200, first
    assert (again.status, again.json) == (200, first.json)
    assert chat_model.prompt_count() == asked


def test_a_repeated_streamed_chat_gets_the_reply_as_one_stream(
    api: ApiClient, stream_api: ApiClient, chat_model: RecordingChatModel
) -> None:
    key, session = new_key(), f"idem-{secrets.token_urlsafe(8)}"
    body = {"message": "Say hello.", "sessionId": session, "useMemory": False, "stream": True}
    with chat_model.answering("Hello there, good to hear from you."):
        first = stream_api.post("/chat", body, headers={"Idempotency-Key": key})  # streamed as it came
        again = api.post("/chat", body, headers={"Idempotency-Key": key})  # the HTTP API: the same record
    assert first.status == 200, first
    assert again.status == 200, again
    assert again.headers["content-type"].startswith("text/event-stream")

    def events(text: str) -> list[tuple[str, Any]]:
        parsed = []
        for block in text.strip().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            parsed.append((fields["event"], json.loads(fields["data"])))
        return parsed

    streamed, replayed = events(first.json), events(again.json)
    assert replayed == [("delta", {"text": "Hello there, good to hear from you."}), streamed[-1]]


def test_the_idempotency_table_holds_no_plaintext(
    api: ApiClient, chat_model: RecordingChatModel, aws: Callable[[str], Any], stack: RunningStack
) -> None:
    content, reply, key = f"Locker combination {secrets.token_hex(6)}", f"Noted {secrets.token_hex(6)}", new_key()
    stored = store(api, content, f"idem-{secrets.token_hex(4)}", key)
    assert stored.status == 201
    with chat_model.answering(reply):
        chatted = api.post(
            "/chat", {"message": content, "useMemory": False}, headers={"Idempotency-Key": key + "-chat"}
        )
    assert chatted.status == 200
    items = idempotency_items(aws, stack)
    assert items
    assert find_plaintext(items, [content, reply, key, stack.settings.owner, stored.json["id"]]) == []
    for item in items:
        assert item["status"]["S"] == "COMPLETED"
        # Removed by the table's TTL a day after it was written.
        assert 0 < int(item["expiration"]["N"]) - time.time() <= 24 * 3600


def test_a_forgotten_users_recorded_answers_cannot_be_read(
    api: ApiClient, aws: Callable[[str], Any], stack: RunningStack
) -> None:
    user = f"idem-gone-{secrets.token_hex(4)}"
    doomed = api.with_key(stack.container.api_keys.issue(user, "forgotten").key)
    key = new_key()
    before = {item["id"]["S"] for item in idempotency_items(aws, stack)}
    stored = store(doomed, "a note that must go with its user", f"idem-{secrets.token_hex(4)}", key)
    assert stored.status == 201
    (record,) = [item for item in idempotency_items(aws, stack) if item["id"]["S"] not in before]
    sealed = json.loads(record["data"]["S"])

    def opened() -> Any:
        # A fresh composition root: no branch key cached from before the forget.
        answers = SealedAnswers(
            Container(stack.settings).cipher,
            table=stack.settings.idempotency_table,
            owner=user,
            scope="POST /memory",
            key=key,
        )
        return json.loads(answers.from_dict(sealed).body)

    assert opened() == stored.json
    forgotten = doomed.post("/account", {"action": "forget", "confirm": "forget everything"})
    assert forgotten.status == 200, forgotten
    with pytest.raises(KeyMaterialDestroyed):
        opened()


def test_an_unreachable_idempotency_table_is_a_503_and_stores_nothing(
    api: ApiClient, stack: RunningStack, installed: Callable[[Container], None]
) -> None:
    installed(Container(replace(stack.settings, idempotency_table=f"pai-idempotency-missing-{secrets.token_hex(3)}")))
    category = f"idem-{secrets.token_hex(4)}"
    result = store(api, "not stored while keys cannot be kept", category, new_key())
    assert result.status == 503, result
    assert result.json["error"]["code"] == "service_unavailable"
    assert int(result.headers["retry-after"]) >= 1
    assert listed(api, category) == []
