"""How often the key hierarchy lets PAI call KMS, counted on the emulator's real KMS API."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from pai_core.bootstrap import Container
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient

pytestmark = pytest.mark.integration


def counting(container: Container) -> Counter[str]:
    calls: Counter[str] = Counter()
    kms_client: Any = container.key_service._client  # type: ignore[attr-defined]

    def count(event_name: str, **_: object) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    kms_client.meta.events.register("before-call.kms.*", count)
    return calls


def new_user() -> str:
    return f"kms-{uuid.uuid4().hex[:12]}"


def test_one_kms_call_per_user_per_cold_container(stack: RunningStack) -> None:
    user = new_user()
    writer = Container(stack.settings)  # a fresh composition root: a cold Lambda container
    calls = counting(writer)
    stored = [
        writer.memories.remember(user, content=f"kms counting memory {i}", category="kmscount", metadata={})
        for i in range(100)
    ]
    # 300 values sealed (content, metadata, embedding): the user's branch key is made once.
    assert calls == Counter({"GenerateDataKey": 1})

    reader = Container(stack.settings)
    reads = counting(reader)
    for memory in stored:
        assert reader.memories.recall(user, memory.id).content == memory.content
    assert reads == Counter({"Decrypt": 1})  # one unwrap of the user's branch key, then the cache
    print(f"\nKMS calls: {sum(calls.values())} per 100 stores (new user); {sum(reads.values())} per 100 cold reads")


def test_a_cold_container_serving_several_users_calls_kms_once_per_user(stack: RunningStack) -> None:
    users = [new_user() for _ in range(5)]
    writer = Container(stack.settings)
    for user in users:
        for i in range(10):
            writer.memories.remember(user, content=f"memory {i} of {user}", category="kmscount", metadata={})
    reader = Container(stack.settings)
    reads = counting(reader)
    for user in users:
        page = reader.memories.list_memories(user, category=None, limit=10, cursor=None)
        assert len(page.items) == 10
    assert reads == Counter({"Decrypt": len(users)})


def test_rotation_and_forgetting_through_the_real_key_store(stack: RunningStack) -> None:
    user = new_user()
    container = Container(stack.settings)
    before = container.memories.remember(user, content="sealed under version 1", category="general", metadata={})
    assert container.keyring.rotate(user) == 2
    after = container.memories.remember(user, content="sealed under version 2", category="general", metadata={})
    cold = Container(stack.settings)
    assert cold.memories.recall(user, before.id).content == "sealed under version 1"
    assert cold.memories.recall(user, after.id).content == "sealed under version 2"

    report = cold.account.forget(user)
    assert (report.memories, report.key_versions) == (2, 3)  # two versions and the active pointer
    assert Container(stack.settings).memories.list_memories(user, category=None, limit=10, cursor=None).items == []


def test_kms_calls_per_cold_start_and_per_1000_requests_over_http(
    stack: RunningStack, api: ApiClient, installed: Callable[[Container], None]
) -> None:
    """The figure the security issue asks for: a cold container serving 1,000 API requests of two
    users (stores, retrieves, lists and searches), authorizer included."""
    users = [new_user(), new_user()]
    clients = [api.with_key(stack.container.api_keys.issue(user, "kms count").key) for user in users]
    # The second user already has a branch key (made by another container): a cold start unwraps it.
    Container(stack.settings).memories.remember(users[1], content="made elsewhere", category="general", metadata={})
    cold = Container(stack.settings)
    installed(cold)
    calls = counting(cold)
    stored: list[list[str]] = [[], []]
    per_cold_start: Counter[str] | None = None
    for request in range(1000):
        which = request % 2
        client, kind = clients[which], (request // 2) % 4
        if kind == 0 or not stored[which]:
            result = client.post("/memory", {"action": "store", "content": f"memory {request} of user {which}"})
            assert result.status == 201, result
            stored[which].append(result.json["id"])
        elif kind == 1:
            result = client.post("/memory", {"action": "retrieve", "id": stored[which][-1]})
        elif kind == 2:
            result = client.post("/memory", {"action": "list", "limit": 20})
        else:
            result = client.post("/search", {"query": f"memory {request}", "topK": 5})
        assert result.status in (200, 201), result
        if request == 1:  # each user has been served once
            per_cold_start = Counter(calls)
    assert per_cold_start == Counter({"GenerateDataKey": 1, "Decrypt": 1})  # one per user: new, existing
    assert calls == per_cold_start  # and none for the next 998 requests (within the 300 s key cache)
    print(
        f"\nKMS calls: {sum(per_cold_start.values())} for a cold start serving 2 users; "
        f"{sum(calls.values())} per 1,000 requests"
    )
