"""Per-user limits: the use case over in-memory counters (window boundaries, Retry-After, 0 = off),
the chat service never asking the model once the day's budget is spent, the handlers' 429s, the
DynamoDB counters' requests, and the template's table, grants and settings."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest

import handlers.chat
import handlers.memory
import handlers.search
from pai_core.adapters.dynamodb_usage import DynamoUsageCounters
from pai_core.bootstrap import set_container
from pai_core.config import Settings
from pai_core.deadline import remaining_seconds, request_deadline
from pai_core.errors import InvalidInput, RateLimited, UpstreamUnavailable
from pai_core.limits import UsageLimits, request_counter, token_counter
from pai_core.services import ChatService, MemoryService
from pai_local.template import Template
from tests.fakes import (
    FakeContainer,
    FakeLambdaContext,
    FixedClock,
    HashingEmbedder,
    InMemoryConversationRepository,
    InMemoryMemoryRepository,
    InMemoryUsageCounters,
    ScriptedChatModel,
)
from tests.unit.test_handlers import make_event

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def limits(
    *, per_minute: int = 3, budget: int = 100, at: datetime = NOON
) -> tuple[UsageLimits, InMemoryUsageCounters, FixedClock]:
    counters = InMemoryUsageCounters()
    clock = FixedClock(at)
    return UsageLimits(counters, clock, requests_per_minute=per_minute, daily_token_budget=budget), counters, clock


def refused(action: Any, *args: Any) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        action(*args)
    return caught.value


# == the request rate ===============================================================================


def test_requests_up_to_the_limit_pass_and_the_next_is_refused_until_the_minute_ends() -> None:
    limiter, _, clock = limits(per_minute=3, at=NOON + timedelta(seconds=20))
    for _ in range(3):
        limiter.admit_request("ann")
    error = refused(limiter.admit_request, "ann")
    assert error.code == "rate_limited"
    assert error.retry_after_seconds == 40
    assert "3 requests" in error.message
    clock.advance(seconds=39)
    assert refused(limiter.admit_request, "ann").retry_after_seconds == 1
    clock.advance(seconds=1)  # 12:01:00, a new window
    limiter.admit_request("ann")


@pytest.mark.parametrize(
    ("offset", "retry_after"),
    [
        (timedelta(0), 60),  # at the very start of a minute, the whole minute is left
        (timedelta(seconds=29, milliseconds=500), 31),  # 30.5 s left: rounded up, never early
        (timedelta(seconds=59, milliseconds=999), 1),  # never 0: "retry now" would be refused again
    ],
)
def test_retry_after_is_the_whole_seconds_to_the_next_minute(offset: timedelta, retry_after: int) -> None:
    limiter, _, _ = limits(per_minute=1, at=NOON + offset)
    limiter.admit_request("ann")
    assert refused(limiter.admit_request, "ann").retry_after_seconds == retry_after


def test_windows_are_utc_minutes_whatever_the_clocks_zone() -> None:
    plus_five = timezone(timedelta(hours=5, minutes=30))
    limiter, counters, _ = limits(per_minute=1, at=NOON.astimezone(plus_five))
    limiter.admit_request("ann")
    assert set(counters.totals) == {request_counter("ann", NOON)}
    assert request_counter("ann", NOON) == "requests#ann#2026-11-24T12:00"


def test_the_last_second_of_a_minute_and_the_first_of_the_next_are_different_windows() -> None:
    limiter, counters, clock = limits(per_minute=1, at=NOON - timedelta(milliseconds=1))
    limiter.admit_request("ann")
    clock.advance(milliseconds=1)
    limiter.admit_request("ann")
    assert sorted(counters.totals.values()) == [1, 1]


def test_each_user_has_their_own_rate() -> None:
    limiter, _, _ = limits(per_minute=1)
    limiter.admit_request("ann")
    refused(limiter.admit_request, "ann")
    limiter.admit_request("bob")


def test_refused_requests_still_count_so_hammering_keeps_the_window_full() -> None:
    limiter, counters, _ = limits(per_minute=2)
    for _ in range(2):
        limiter.admit_request("ann")
    for _ in range(3):
        refused(limiter.admit_request, "ann")
    assert counters.totals[request_counter("ann", NOON)] == 5


def test_a_minutes_counter_expires_after_its_window() -> None:
    limiter, counters, _ = limits(at=NOON + timedelta(seconds=10))
    limiter.admit_request("ann")
    (expiry,) = counters.expiries.values()
    assert expiry > NOON + timedelta(minutes=1)
    assert expiry <= NOON + timedelta(days=1)


def test_a_rate_of_zero_switches_the_limit_off_and_counts_nothing() -> None:
    limiter, counters, _ = limits(per_minute=0)
    for _ in range(1000):
        limiter.admit_request("ann")
    assert counters.totals == {}


def test_a_counter_store_that_is_down_refuses_the_request_with_a_503() -> None:
    limiter, counters, _ = limits()
    counters.fail_with = UpstreamUnavailable("DynamoDB cannot be reached")
    with pytest.raises(UpstreamUnavailable):
        limiter.admit_request("ann")


class RecordingCounters(InMemoryUsageCounters):
    """Also records, for each count, the thread it ran on and the request time it saw left."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float | None]] = []

    def add(self, name: str, amount: int, *, expires_at: datetime) -> int:
        self.seen.append((threading.current_thread().name, remaining_seconds()))
        return super().add(name, amount, expires_at=expires_at)


def test_a_count_started_ahead_admits_up_to_the_limit_and_refuses_past_it_on_wait() -> None:
    limiter, counters, _ = limits(per_minute=2)
    for _ in range(2):
        limiter.start_request("ann").wait()
    pending = limiter.start_request("ann")
    with pytest.raises(RateLimited):
        pending.wait()
    with pytest.raises(RateLimited):  # the verdict stands, however often it is asked
        pending.wait()
    assert counters.totals == {request_counter("ann", NOON): 3}


def test_a_count_started_ahead_runs_on_a_worker_within_the_requests_deadline() -> None:
    counters = RecordingCounters()
    limiter = UsageLimits(counters, FixedClock(NOON), requests_per_minute=5, daily_token_budget=0)
    with request_deadline(30.0):
        limiter.start_request("ann").wait()
    ((thread, remaining),) = counters.seen
    assert thread != threading.current_thread().name
    assert remaining is not None and 0 < remaining <= 30.0


def test_a_refusal_replaces_whatever_else_the_admitted_block_raised() -> None:
    limiter, _, _ = limits(per_minute=1)
    with limiter.admitting("ann") as admission:
        admission.wait()
    with pytest.raises(RateLimited), limiter.admitting("ann"):
        raise InvalidInput("a bad body")
    with pytest.raises(InvalidInput), limits(per_minute=1)[0].admitting("ann"):
        raise InvalidInput("a bad body, within the rate")


def test_an_owner_refused_this_minute_is_counted_before_anything_else_runs() -> None:
    """A client hammering past its limit gets no work done alongside its refusals: after its first
    refusal in a minute, the count is made (and refused) on the caller's thread, before the block."""
    counters = RecordingCounters()
    clock = FixedClock(NOON)
    limiter = UsageLimits(counters, clock, requests_per_minute=1, daily_token_budget=0)
    limiter.start_request("ann").wait()
    with pytest.raises(RateLimited):
        limiter.start_request("ann").wait()
    ran: list[str] = []
    with pytest.raises(RateLimited), limiter.admitting("ann"):
        ran.append("the block")
    assert ran == []
    assert counters.seen[-1][0] == threading.current_thread().name
    assert counters.totals == {request_counter("ann", NOON): 3}
    clock.advance(seconds=60)  # a new minute: counted alongside the work again
    with limiter.admitting("ann") as admission:
        ran.append("the block")
        admission.wait()
    assert ran == ["the block"]
    assert counters.seen[-1][0] != threading.current_thread().name


def test_a_counter_store_that_is_down_is_a_503_when_the_verdict_is_awaited() -> None:
    limiter, counters, _ = limits()
    counters.fail_with = UpstreamUnavailable("DynamoDB cannot be reached")
    with pytest.raises(UpstreamUnavailable), limiter.admitting("ann"):
        pass


def test_a_search_refused_on_its_way_reads_no_memory() -> None:
    """The ranking may run alongside the count; the hits are read only once the count admitted it."""
    repository = InMemoryMemoryRepository()
    service = MemoryService(repository, HashingEmbedder(), FixedClock(NOON))
    service.remember("ann", content="the spare key is under the mat", category="home", metadata={})
    read: list[str] = []
    get_many = repository.get_many

    def counting_get_many(owner: str, ids: Any) -> Any:
        read.append(owner)
        return get_many(owner, ids)

    repository.get_many = counting_get_many  # type: ignore[method-assign]

    def refuse() -> None:
        raise RateLimited("over", retry_after_seconds=5)

    with pytest.raises(RateLimited):
        service.search("ann", "where is the key", top=3, before_fetch=refuse)
    assert read == []
    assert [hit.memory.content for hit in service.search("ann", "where is the key", top=3)] == [
        "the spare key is under the mat"
    ]
    assert read == ["ann"]


def test_negative_limits_are_refused_when_built() -> None:
    with pytest.raises(ValueError, match="0 switches"):
        UsageLimits(InMemoryUsageCounters(), FixedClock(), requests_per_minute=-1, daily_token_budget=0)


# == the daily token budget =========================================================================


def test_the_budget_passes_below_it_and_refuses_at_it_until_utc_midnight() -> None:
    limiter, _, clock = limits(budget=100)
    limiter.record_tokens("ann", 99)
    limiter.ensure_token_budget("ann")
    limiter.record_tokens("ann", 1)
    error = refused(limiter.ensure_token_budget, "ann")
    assert error.code == "token_budget_exhausted"
    assert error.retry_after_seconds == 12 * 3600
    assert "100 model tokens" in error.message
    clock.advance(hours=11, minutes=59, seconds=59, milliseconds=500)
    assert refused(limiter.ensure_token_budget, "ann").retry_after_seconds == 1
    clock.advance(milliseconds=500)  # midnight UTC: a new day
    limiter.ensure_token_budget("ann")


def test_one_call_may_overshoot_the_budget_and_the_next_is_refused() -> None:
    limiter, _, _ = limits(budget=100)
    limiter.ensure_token_budget("ann")
    limiter.record_tokens("ann", 5000)
    refused(limiter.ensure_token_budget, "ann")


def test_days_are_utc_days_whatever_the_clocks_zone() -> None:
    late_evening_in_new_york = datetime(2026, 11, 24, 23, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=-5)))
    limiter, counters, _ = limits(budget=10, at=late_evening_in_new_york)
    limiter.record_tokens("ann", 10)
    assert set(counters.totals) == {"tokens#ann#2026-11-24"}
    assert refused(limiter.ensure_token_budget, "ann").retry_after_seconds == 30 * 60
    assert token_counter("ann", NOON) == "tokens#ann#2026-11-24"


def test_each_user_has_their_own_budget() -> None:
    limiter, _, _ = limits(budget=10)
    limiter.record_tokens("ann", 10)
    refused(limiter.ensure_token_budget, "ann")
    limiter.ensure_token_budget("bob")


def test_a_days_counter_expires_after_the_day() -> None:
    limiter, counters, _ = limits()
    limiter.record_tokens("ann", 3)
    (expiry,) = counters.expiries.values()
    assert expiry > datetime(2026, 11, 25, tzinfo=UTC)


def test_nothing_is_written_for_no_tokens() -> None:
    limiter, counters, _ = limits()
    limiter.record_tokens("ann", 0)
    assert counters.totals == {}


def test_a_budget_of_zero_switches_it_off_and_neither_reads_nor_writes() -> None:
    limiter, counters, _ = limits(budget=0)
    counters.fail_with = AssertionError("the counters were used")
    limiter.record_tokens("ann", 10**9)
    limiter.ensure_token_budget("ann")


def test_tokens_that_cannot_be_charged_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """The model has answered by then: failing the request would only make the caller pay again."""
    limiter, counters, _ = limits()
    counters.fail_with = UpstreamUnavailable("DynamoDB cannot be reached")
    with caplog.at_level(logging.WARNING, logger="pai_core.limits"):
        limiter.record_tokens("ann", 10)
    assert "not charged" in caplog.text


def test_a_budget_check_against_a_store_that_is_down_is_a_503() -> None:
    limiter, counters, _ = limits()
    counters.fail_with = UpstreamUnavailable("DynamoDB cannot be reached")
    with pytest.raises(UpstreamUnavailable):
        limiter.ensure_token_budget("ann")


# == chat and the budget ============================================================================


def chat_service(limiter: UsageLimits, model: ScriptedChatModel) -> tuple[ChatService, InMemoryConversationRepository]:
    clock = FixedClock(NOON)
    conversations = InMemoryConversationRepository()
    memories = MemoryService(InMemoryMemoryRepository(), HashingEmbedder(), clock)
    service = ChatService(
        conversations, memories, model, clock, history_max_turns=40, max_output_tokens=64, limits=limiter
    )
    return service, conversations


TURN: dict[str, Any] = {"session_id": "s-1", "use_memory": False, "top_k": 0}


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "chat_stream"])
def test_a_spent_budget_never_reaches_the_model_and_stores_nothing(streamed: bool) -> None:
    limiter, _, _ = limits(budget=50)
    limiter.record_tokens("ann", 50)
    model = ScriptedChatModel()
    service, conversations = chat_service(limiter, model)
    with pytest.raises(RateLimited) as caught:
        if streamed:
            service.chat_stream("ann", message="hello", **TURN)  # refused before the first item
        else:
            service.chat("ann", message="hello", **TURN)
    assert caught.value.code == "token_budget_exhausted"
    assert model.prompts == []
    assert conversations.turns == {}


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "chat_stream"])
def test_a_chat_charges_its_prompt_and_reply_tokens(streamed: bool) -> None:
    limiter, counters, _ = limits(budget=10_000)
    model = ScriptedChatModel(reply="three word reply")
    service, _ = chat_service(limiter, model)
    if streamed:
        *_, reply = list(service.chat_stream("ann", message="hello there", **TURN))
    else:
        reply = service.chat("ann", message="hello there", **TURN)
    usage = reply.usage  # type: ignore[union-attr]
    assert usage.output_tokens == 3
    assert counters.totals == {token_counter("ann", NOON): usage.input_tokens + usage.output_tokens}


def test_the_call_that_reaches_the_budget_answers_and_the_next_is_refused() -> None:
    limiter, counters, _ = limits(budget=10)
    model = ScriptedChatModel(reply="a reply of some length")
    service, _ = chat_service(limiter, model)
    service.chat("ann", message="first", **TURN)
    assert counters.totals[token_counter("ann", NOON)] >= 10
    with pytest.raises(RateLimited):
        service.chat("ann", message="second", **TURN)
    assert len(model.prompts) == 1


def test_a_stream_that_breaks_off_is_charged_for_what_it_used() -> None:
    limiter, counters, _ = limits(budget=10_000)
    model = ScriptedChatModel(reply="one two three four")
    model.fail_after_deltas = 2
    service, _ = chat_service(limiter, model)
    stream = service.chat_stream("ann", message="hello", **TURN)
    with pytest.raises(UpstreamUnavailable):
        list(stream)
    charged = counters.totals[token_counter("ann", NOON)]
    prompt_words = sum(len(m.content.split()) for m in model.prompts[0])
    assert charged >= prompt_words + 2


def test_a_stream_its_reader_leaves_is_charged_for_what_it_used() -> None:
    limiter, counters, _ = limits(budget=10_000)
    service, _ = chat_service(limiter, ScriptedChatModel(reply="one two three four"))
    stream = service.chat_stream("ann", message="hello", **TURN)
    assert isinstance(stream, Iterator)
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert counters.totals[token_counter("ann", NOON)] > 1


def test_a_model_that_fails_before_answering_is_not_charged() -> None:
    limiter, counters, _ = limits(budget=10_000)
    model = ScriptedChatModel()
    model.fail_with = UpstreamUnavailable("llm down")
    service, _ = chat_service(limiter, model)
    with pytest.raises(UpstreamUnavailable):
        service.chat("ann", message="hello", **TURN)
    assert counters.totals == {}


def test_chat_without_limits_works_as_before() -> None:
    clock = FixedClock(NOON)
    memories = MemoryService(InMemoryMemoryRepository(), HashingEmbedder(), clock)
    service = ChatService(
        InMemoryConversationRepository(), memories, ScriptedChatModel(), clock, history_max_turns=4, max_output_tokens=8
    )
    assert service.chat("ann", message="hello", **TURN).reply == "Noted."


# == over HTTP (handlers with the fakes) ============================================================


def http_event(route: str, body: dict[str, Any] | None) -> dict[str, Any]:
    return make_event(route, None if body is None else json.dumps(body))


def send(module: ModuleType, route: str, body: dict[str, Any] | None) -> tuple[int, dict[str, str], Any]:
    response = module.handler(http_event(route, body), FakeLambdaContext())
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    return response["statusCode"], headers, json.loads(response["body"]) if response.get("body") else None


@pytest.fixture
def limited() -> Iterator[FakeContainer]:
    container = FakeContainer(settings=Settings(rate_limit_per_minute=2, daily_token_budget=1000))
    set_container(container)  # type: ignore[arg-type]
    yield container
    set_container(None)


ROUTES = [
    pytest.param(handlers.memory, "POST /memory", {"action": "list"}, id="memory"),
    pytest.param(handlers.search, "POST /search", {"query": "anything"}, id="search"),
    pytest.param(handlers.chat, "POST /chat", {"message": "hi", "useMemory": False}, id="chat"),
]


@pytest.mark.parametrize(("module", "route", "body"), ROUTES)
def test_over_the_rate_every_route_answers_429_with_retry_after(
    limited: FakeContainer, module: ModuleType, route: str, body: dict[str, Any]
) -> None:
    limited.clock.advance(seconds=15)
    for _ in range(2):
        assert send(module, route, body)[0] == 200
    status, headers, payload = send(module, route, body)
    assert status == 429
    assert headers["retry-after"] == "45"
    assert payload["error"]["code"] == "rate_limited"
    assert set(payload["error"]) == {"code", "message"}
    limited.clock.advance(seconds=45)
    assert send(module, route, body)[0] == 200


def test_the_rate_is_counted_before_the_body_is_read(limited: FakeContainer) -> None:
    """Malformed requests cost the caller their rate too, and a refused caller's body is never parsed."""
    for _ in range(2):
        assert send(handlers.memory, "POST /memory", {"action": "nonsense"})[0] == 400
    assert send(handlers.memory, "POST /memory", {"action": "nonsense"})[0] == 429


def test_a_search_over_the_rate_is_refused_whatever_its_body(limited: FakeContainer) -> None:
    """The search route counts the request alongside reading its body: a refusal still wins."""
    for _ in range(2):
        assert send(handlers.search, "POST /search", {"query": ""})[0] == 400
    status, headers, payload = send(handlers.search, "POST /search", {"query": ""})
    assert (status, payload["error"]["code"]) == (429, "rate_limited")
    assert "retry-after" in headers


def test_health_is_not_rate_limited(limited: FakeContainer) -> None:
    for _ in range(5):
        assert send(handlers.memory, "GET /health", None)[0] == 200
    assert limited.usage.totals == {}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_spent_budget_is_a_429_until_midnight_utc(limited: FakeContainer, stream: bool) -> None:
    limited.limits.record_tokens(limited.settings.owner, 1000)
    status, headers, payload = send(handlers.chat, "POST /chat", {"message": "hi", "stream": stream})
    assert status == 429
    assert headers["retry-after"] == str(12 * 3600)  # the fake clock says noon
    assert headers["content-type"] == "application/json"
    assert payload["error"]["code"] == "token_budget_exhausted"
    assert limited.chat_model.prompts == []
    assert limited.conversations.turns == {}


# == the DynamoDB counters ==========================================================================


class RecordingDynamo:
    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("UpdateItem", request))
        return self.response

    def get_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("GetItem", request))
        return self.response


def test_a_count_is_one_atomic_add_that_returns_the_new_total_and_sets_the_expiry() -> None:
    client = RecordingDynamo({"Attributes": {"count": {"N": "7"}, "ttl": {"N": "1"}}})
    counters = DynamoUsageCounters(client, "pai-usage-dev")  # type: ignore[arg-type]
    assert counters.add("requests#ann#2026-11-24T12:00", 1, expires_at=NOON + timedelta(hours=1)) == 7
    ((operation, request),) = client.calls
    assert operation == "UpdateItem"
    assert request["TableName"] == "pai-usage-dev"
    assert request["Key"] == {"id": {"S": "requests#ann#2026-11-24T12:00"}}
    assert request["UpdateExpression"].startswith("ADD ")
    assert request["ReturnValues"] == "UPDATED_NEW"
    values = request["ExpressionAttributeValues"]
    assert values[":amount"] == {"N": "1"}
    assert values[":ttl"] == {"N": str(int((NOON + timedelta(hours=1)).timestamp()))}
    assert "ConditionExpression" not in request


@pytest.mark.parametrize(("response", "total"), [({"Item": {"count": {"N": "42"}}}, 42), ({}, 0)])
def test_reading_a_counter_is_one_consistent_get(response: dict[str, Any], total: int) -> None:
    client = RecordingDynamo(response)
    counters = DynamoUsageCounters(client, "pai-usage-dev")  # type: ignore[arg-type]
    assert counters.get("tokens#ann#2026-11-24") == total
    ((operation, request),) = client.calls
    assert operation == "GetItem"
    assert request["Key"] == {"id": {"S": "tokens#ann#2026-11-24"}}
    assert request["ConsistentRead"] is True


# == the template ===================================================================================

LIMITED_FUNCTIONS = {"ChatFunction", "MemoryFunction", "SearchFunction", "DocumentsFunction"}


def test_the_usage_table_is_encrypted_with_the_stacks_key_and_expires_old_windows() -> None:
    template = Template.load(Env="prod")
    table = template.properties("UsageTable")
    assert template.resolve(table["TableName"]) == "pai-usage-prod"
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "PaiKey"}}
    assert Settings(env="prod").usage_table == "pai-usage-prod"


def test_every_function_gets_the_usage_table_and_both_limits() -> None:
    template = Template.load(Env="dev")
    for name in LIMITED_FUNCTIONS:
        variables = template.properties(name)["Environment"]["Variables"]
        assert variables["PAI_USAGE_TABLE"] == {"Ref": "UsageTable"}, name
        assert variables["PAI_RATE_LIMIT_PER_MINUTE"] == {"Ref": "RateLimitPerMinute"}, name
        assert variables["PAI_DAILY_TOKEN_BUDGET"] == {"Ref": "DailyTokenBudget"}, name
    parameters = template.document["Parameters"]
    defaults = Settings()
    assert parameters["RateLimitPerMinute"]["Default"] == defaults.rate_limit_per_minute
    assert parameters["DailyTokenBudget"]["Default"] == defaults.daily_token_budget
    assert parameters["RateLimitPerMinute"]["MinValue"] == parameters["DailyTokenBudget"]["MinValue"] == 0


def test_roles_may_only_count_on_the_usage_table_and_only_chat_reads_it() -> None:
    template = Template.load(Env="dev")
    usage_table = {"Fn::GetAtt": ["UsageTable", "Arn"]}
    granted: dict[str, set[str]] = {}
    for role, spec in template.of_type("AWS::IAM::Role").items():
        for policy in spec["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                resources = statement.get("Resource")
                if resources == usage_table or (isinstance(resources, list) and usage_table in resources):
                    assert resources == usage_table, role  # that table alone, no index, no wildcard
                    granted.setdefault(role, set()).update(statement["Action"])
    assert granted == {
        "ChatFunctionRole": {"dynamodb:UpdateItem", "dynamodb:GetItem"},
        "ChatStreamFunctionRole": {"dynamodb:UpdateItem", "dynamodb:GetItem"},  # the same chat, streamed
        "MemoryFunctionRole": {"dynamodb:UpdateItem"},
        "SearchFunctionRole": {"dynamodb:UpdateItem"},
        "DocumentsFunctionRole": {"dynamodb:UpdateItem"},
        # Learning from chat checks and charges the user's daily model tokens (and marks learned turns).
        "LearningFunctionRole": {"dynamodb:UpdateItem", "dynamodb:GetItem"},
    }


def test_api_level_throttling_and_reserved_concurrency_are_in_place() -> None:
    template = Template.load(Env="dev")
    (stage,) = template.of_type("AWS::ApiGatewayV2::Stage").values()
    route_settings = stage["Properties"]["DefaultRouteSettings"]
    assert route_settings["ThrottlingRateLimit"] > 0
    assert route_settings["ThrottlingBurstLimit"] > 0
    for name in LIMITED_FUNCTIONS:
        assert template.properties(name)["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
