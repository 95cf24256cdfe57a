"""Per-user limits over HTTP against the local stack: a request rate over the limit and a spent
daily token budget are 429s with Retry-After, counted in the real usage table.

Each test serves from a composition root like the stack's but with small limits and a clock pinned
inside one minute (so that no window boundary falls mid-test), for a new user with their own API
key, so the session's own heavy use of its user does not count; the stack's root comes back after.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.bootstrap import Container
from pai_core.limits import request_counter, token_counter
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient, HttpResult, RecordingChatModel

pytestmark = pytest.mark.integration


class PinnedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def half_past_this_minute() -> datetime:
    return datetime.now(UTC).replace(second=30, microsecond=0)


def limited_stack(
    stack: RunningStack,
    install: Callable[[Container], None],
    *,
    clock: PinnedClock,
    per_minute: int = 0,
    daily_tokens: int = 0,
) -> Container:
    settings = replace(stack.settings, rate_limit_per_minute=per_minute, daily_token_budget=daily_tokens)
    container = Container(settings, chat_model=stack.container.chat_model)
    container.clock = clock  # type: ignore[assignment]  # before anything that reads it is built
    install(container)
    return container


def new_client(stack: RunningStack, api: ApiClient, prefix: str) -> tuple[str, ApiClient]:
    user = f"{prefix}-{secrets.token_hex(4)}"
    return user, api.with_key(stack.container.api_keys.issue(user, "test_limits").key)


def usage_count(aws: Callable[[str], Any], stack: RunningStack, name: str) -> dict[str, Any]:
    item = aws("dynamodb").get_item(TableName=stack.settings.usage_table, Key={"id": {"S": name}}, ConsistentRead=True)
    found: dict[str, Any] = item.get("Item", {})
    return found


def assert_limited(result: HttpResult, code: str, retry_after: int) -> None:
    assert result.status == 429, result
    assert result.headers["content-type"] == "application/json"
    assert result.headers["retry-after"] == str(retry_after)
    assert set(result.json) == {"error"}
    assert result.json["error"]["code"] == code
    assert result.json["error"]["message"]


def test_over_the_request_rate_is_a_429_until_the_next_minute(
    stack: RunningStack, api: ApiClient, installed: Callable[[Container], None], aws: Callable[[str], Any]
) -> None:
    clock = PinnedClock(half_past_this_minute())
    limited_stack(stack, installed, clock=clock, per_minute=3)
    user, client = new_client(stack, api, "rate")
    for path, body in [("/memory", {"action": "list"}), ("/search", {"query": "anything"}), ("/memory", {})]:
        assert client.post(path, body).status in {200, 400}  # a bad request counts too
    for path, body in [("/memory", {"action": "list"}), ("/search", {"query": "x"}), ("/chat", {"message": "x"})]:
        assert_limited(client.post(path, body), "rate_limited", retry_after=30)

    counter = usage_count(aws, stack, request_counter(user, clock.at.replace(second=0)))
    assert counter["count"] == {"N": "6"}  # refused requests count too
    assert int(counter["ttl"]["N"]) > int(clock.at.timestamp()) + 30  # kept past its window, then expired

    # Other users are not limited by this one, and health never is.
    _, other = new_client(stack, api, "rate-other")
    assert other.post("/memory", {"action": "list"}).status == 200
    assert client.get("/health").status == 200

    clock.at += timedelta(seconds=30)  # the next minute
    assert client.post("/memory", {"action": "list"}).status == 200


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_spent_daily_token_budget_is_a_429_until_midnight_utc(
    stack: RunningStack,
    api: ApiClient,
    installed: Callable[[Container], None],
    aws: Callable[[str], Any],
    chat_model: RecordingChatModel,
    conversations: DynamoConversationRepository,
    stream: bool,
) -> None:
    at = half_past_this_minute()
    clock = PinnedClock(at)
    limited_stack(stack, installed, clock=clock, daily_tokens=50)  # the system prompt alone is more
    user, client = new_client(stack, api, "tokens")
    turn = {"useMemory": False, "sessionId": f"budget-{secrets.token_hex(4)}", "stream": stream}

    first = client.post("/chat", {**turn, "message": "Say hello."})
    assert first.status == 200, first
    day = at.replace(hour=0, minute=0, second=0)
    charged = int(usage_count(aws, stack, token_counter(user, day))["count"]["N"])
    assert charged > 50

    asked = chat_model.prompt_count()
    refused = client.post("/chat", {**turn, "message": "And again?"})
    midnight = day + timedelta(days=1)
    assert_limited(refused, "token_budget_exhausted", retry_after=int((midnight - at).total_seconds()))
    assert chat_model.prompt_count() == asked  # the model was not asked
    assert int(usage_count(aws, stack, token_counter(user, day))["count"]["N"]) == charged
    stored = conversations.recent(user, turn["sessionId"], now=at, limit=10)
    assert [t.content for t in stored if t.role == "user"] == ["Say hello."]  # the refused turn left no trace

    # The rest of the API still answers: only model calls are budgeted.
    assert client.post("/memory", {"action": "list"}).status == 200
    clock.at = midnight
    assert client.post("/chat", {**turn, "message": "A new day?"}).status == 200
