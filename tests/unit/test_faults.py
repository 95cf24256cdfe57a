"""DynamoDB, KMS and S3 failing (throttling, internal errors, timeouts, unreachable), injected at the
adapter boundary with no network: real boto3 clients, configured as the composition root configures
them, whose every attempt is answered at botocore's `before-send` event instead of being sent. So
botocore's own retry handler decides what to retry and how long to wait, exactly as it would on
the wire; only its sleep is replaced by a recorder (and, where a test simulates time, a clock).

What must hold: a bounded number of attempts with growing, jittered waits, then UpstreamUnavailable
(a 503 JSON error with Retry-After at the handler); no partial writes (a memory is stored whole or
not at all, a resent write is not a second one); and no request running past its function's
timeout, which is checked by arithmetic over the template and the settings and by simulated time,
never by measuring.
"""

from __future__ import annotations

import json
import os
import random
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import httpx2
import numpy as np
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.retries.standard import ExponentialBackoff

import handlers.chat
import handlers.memory
import pai_core.deadline
from handlers._http import RESPONSE_MARGIN_SECONDS
from pai_core.adapters import llm_openai
from pai_core.adapters.aws_deadline import (
    MAX_BACKOFF_SECONDS,
    RETRY_AFTER_EXTRA_SECONDS,
    THROTTLING_BACKOFF_BASE_SECONDS,
    attempt_seconds,
    bound_by_request_deadline,
    longest_backoff,
    max_attempts,
    worst_case_call_seconds,
)
from pai_core.adapters.dynamodb_changelog import DynamoChangeLog
from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.adapters.dynamodb_memories import DynamoMemoryRepository
from pai_core.adapters.dynamodb_usage import DynamoUsageCounters
from pai_core.adapters.kms import KmsKeyService
from pai_core.adapters.llm_openai import FIRST_RETRY_WAIT_SECONDS, LONGEST_ASKED_WAIT_SECONDS, OpenAiChatModel
from pai_core.adapters.s3 import S3SnapshotStore
from pai_core.bootstrap import AWS_CLIENT_CONFIG, set_container
from pai_core.config import Settings
from pai_core.deadline import request_deadline
from pai_core.errors import Conflict, UpstreamUnavailable
from pai_core.ids import MemoryIds
from pai_core.models import ChatMessage, Memory, Turn
from pai_local.template import Template
from tests.fakes import FakeContainer, FakeLambdaContext, FixedClock, dynamo_memories
from tests.unit.test_handlers import make_event

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ENDPOINT = "http://aws.test"  # never contacted: every attempt is answered before it is sent
ATTEMPTS = max_attempts(AWS_CLIENT_CONFIG)


# == the wire ======================================================================================


class SimulatedTime:
    """Stands in for botocore's sleep (and, for deadline tests, for the monotonic clock)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data

    def read(self, *_: Any) -> bytes:
        data, self._data = self._data, b""
        return data


Answer = Callable[["Wire", AWSPreparedRequest], AWSResponse]


class Wire:
    """The network under one real boto3 client: answers every attempt botocore makes, in the
    client's own protocol, and records what was sent."""

    def __init__(self, client: Any, simulated: SimulatedTime) -> None:
        self.client = client
        self.time = simulated
        model = client.meta.service_model
        self.protocol = model.resolved_protocol
        self.json_version = model.metadata.get("jsonVersion", "1.0")
        self.sent: list[tuple[str, dict[str, Any]]] = []  # operation, JSON body (when JSON)
        self._answers: dict[str, list[Answer]] = {}
        client.meta.events.register(f"before-send.{model.service_id.hyphenize()}", self._answer)

    def on(self, operation: str, *answers: Answer) -> Wire:
        """Answers for `operation` ("*": any other), one per attempt; the last one repeats."""
        self._answers[operation] = list(answers)
        return self

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.sent]

    def _answer(self, request: AWSPreparedRequest, event_name: str, **_: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[-1]
        body: dict[str, Any] = {}
        if self.protocol == "json" and request.body:
            raw = request.body if isinstance(request.body, bytes) else str(request.body).encode()
            body = json.loads(raw)
        self.sent.append((operation, body))
        answers = self._answers.get(operation) or self._answers["*"]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(self, request)

    def response(self, request: AWSPreparedRequest, status: int, body: bytes, headers: dict[str, str]) -> AWSResponse:
        return AWSResponse(request.url, status, {"x-amzn-RequestId": "test-request", **headers}, _Body(body))


def ok(payload: dict[str, Any] | None = None) -> Answer:
    def answer(wire: Wire, request: AWSPreparedRequest) -> AWSResponse:
        content_type = f"application/x-amz-json-{wire.json_version}" if wire.protocol == "json" else "application/xml"
        body = json.dumps(payload or {}).encode() if wire.protocol == "json" else b""
        return wire.response(request, 200, body, {"content-type": content_type})

    return answer


def error(status: int, code: str, *, retry_after_ms: int | None = None, **fields: Any) -> Answer:
    def answer(wire: Wire, request: AWSPreparedRequest) -> AWSResponse:
        headers = {} if retry_after_ms is None else {"x-amz-retry-after": str(retry_after_ms)}
        if wire.protocol == "json":
            headers["content-type"] = f"application/x-amz-json-{wire.json_version}"
            body = json.dumps({"__type": code, "message": f"injected {code}", **fields}).encode()
        else:
            headers["content-type"] = "application/xml"
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>injected {code}</Message><RequestId>test-request</RequestId></Error>"
            ).encode()
        return wire.response(request, status, body, headers)

    return answer


def raises(kind: type[BotoCoreError], *, takes_seconds: float = 0.0) -> Answer:
    """What botocore's HTTP layer raises, after the time it would have waited for it."""

    def answer(wire: Wire, request: AWSPreparedRequest) -> AWSResponse:
        wire.time.now += takes_seconds
        raise kind(endpoint_url=request.url)

    return answer


def echo_conditional_failure(wire: Wire, request: AWSPreparedRequest) -> AWSResponse:
    """A conditional put refused because the item is there already: the item this very request
    carries, i.e. an earlier attempt of it landed (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""
    item = wire.sent[-1][1]["Item"]
    return error(400, "ConditionalCheckFailedException", Item=item)(wire, request)


# -- clients and adapters --------------------------------------------------------------------------


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> SimulatedTime:
    simulated = SimulatedTime()
    # botocore.endpoint sleeps between attempts with time.sleep; nothing else there reads the clock.
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=simulated.sleep))
    return simulated


@pytest.fixture(autouse=True)
def seeded_jitter() -> Iterator[None]:
    """botocore draws its jitter from `random.random`: seeded, every run sees the same waits."""
    state = random.getstate()
    random.seed(20261124)
    yield
    random.setstate(state)


@cache
def _session() -> boto3.session.Session:
    # One session for the module: it caches the service models, so each test's clients are quick to make.
    return boto3.session.Session(region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")


def aws_client(service: str, config: Config = AWS_CLIENT_CONFIG) -> Any:
    return _session().client(service, endpoint_url=ENDPOINT, config=config)  # type: ignore[call-overload]


def wire_for(service: str, simulated: SimulatedTime) -> Wire:
    return Wire(aws_client(service), simulated)


class SealedAsIs:
    """Stands in for the envelope cipher, so that these tests depend on the adapters' I/O alone:
    like the real one, it never seals the same value to the same bytes twice."""

    def encrypt(self, plaintext: bytes, context: object, *, create_key: bool = True) -> bytes:
        return os.urandom(16) + plaintext

    def decrypt(self, sealed: bytes, context: object) -> bytes:
        return sealed[16:]


def memories(client: Any) -> DynamoMemoryRepository:
    return dynamo_memories(client, "pai-knowledge-test", SealedAsIs(), clock=FixedClock(NOON))  # type: ignore[no-any-return]


def change_log(client: Any) -> DynamoChangeLog:
    return DynamoChangeLog(client, "pai-knowledge-test", clock=FixedClock(NOON), sleep=lambda _: None)


def conversations(client: Any) -> DynamoConversationRepository:
    return DynamoConversationRepository(
        client,
        "pai-conversations-test",
        SealedAsIs(),  # type: ignore[arg-type]
        context_name="pai-conversations-test",
        ttl_seconds=24 * 3600,
    )


def a_memory(content: str = "the cat is called Miso") -> Memory:
    return Memory(id=MemoryIds()(NOON), content=content, category="pets", metadata={}, created_at=NOON)


VECTOR = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
KMS_CONTEXT = {"purpose": "pai-branch-key", "keystore": "pai-keystore-test", "owner": "ann"}


@dataclass(frozen=True)
class AdapterCall:
    service: str
    operation: str
    call: Callable[[Any], object]


ADAPTER_CALLS = {
    "memory store": AdapterCall("dynamodb", "PutItem", lambda c: memories(c).add("ann", a_memory(), VECTOR)),
    "memory retrieve": AdapterCall("dynamodb", "GetItem", lambda c: memories(c).get("ann", "01-some-id")),
    "memory list": AdapterCall(
        "dynamodb", "Query", lambda c: memories(c).page("ann", category=None, limit=20, cursor=None)
    ),
    "search refresh (change stamp)": AdapterCall("dynamodb", "GetItem", lambda c: change_log(c).change_stamp("ann")),
    "search refresh (changes)": AdapterCall(
        "dynamodb", "Query", lambda c: list(change_log(c).changes_after("ann", ""))
    ),
    "conversation append": AdapterCall(
        "dynamodb", "PutItem", lambda c: conversations(c).append("ann", "s-1", Turn("user", "hello", NOON))
    ),
    "usage count": AdapterCall(
        "dynamodb", "UpdateItem", lambda c: DynamoUsageCounters(c, "pai-usage-test").add("n", 1, expires_at=NOON)
    ),
    "kms data key": AdapterCall(
        "kms", "GenerateDataKey", lambda c: KmsKeyService(c, "alias/pai-test").generate_data_key(KMS_CONTEXT)
    ),
    "kms unwrap": AdapterCall(
        "kms", "Decrypt", lambda c: KmsKeyService(c, "alias/pai-test").decrypt_data_key(b"wrapped", KMS_CONTEXT)
    ),
    "snapshot load": AdapterCall("s3", "GetObject", lambda c: S3SnapshotStore(c, "bucket", SealedAsIs()).load("ann")),  # type: ignore[arg-type]
    "snapshot save": AdapterCall(
        "s3",
        "PutObject",
        lambda c: S3SnapshotStore(c, "bucket", SealedAsIs()).save("ann", b"index"),  # type: ignore[arg-type]
    ),
}

TIMEOUTS = {
    "read timeout": raises(ReadTimeoutError),
    "connect timeout": raises(ConnectTimeoutError),
    "unreachable": raises(EndpointConnectionError),
}
FAULTS: dict[str, dict[str, Answer]] = {
    "dynamodb": {
        "throttled": error(400, "ThrottlingException"),
        "over capacity": error(400, "ProvisionedThroughputExceededException"),
        "internal error": error(500, "InternalServerError"),
        **TIMEOUTS,
    },
    "kms": {
        "throttled": error(400, "ThrottlingException"),
        "internal error": error(500, "KMSInternalException"),
        **TIMEOUTS,
    },
    "s3": {
        "slow down": error(503, "SlowDown"),
        "internal error": error(500, "InternalError"),
        **TIMEOUTS,
    },
}
CASES = [
    pytest.param(name, fault_name, id=f"{name}: {fault_name}")
    for name, adapter_call in ADAPTER_CALLS.items()
    for fault_name in FAULTS[adapter_call.service]
]


# == bounded retries, then a 503 ===================================================================


@pytest.mark.parametrize(("call_name", "fault_name"), CASES)
def test_a_failing_dependency_is_retried_a_bounded_number_of_times_then_unavailable(
    simulated: SimulatedTime, call_name: str, fault_name: str
) -> None:
    adapter_call = ADAPTER_CALLS[call_name]
    wire = wire_for(adapter_call.service, simulated).on("*", FAULTS[adapter_call.service][fault_name])
    with pytest.raises(UpstreamUnavailable) as caught:
        adapter_call.call(wire.client)
    assert wire.operations() == [adapter_call.operation] * ATTEMPTS
    assert len(simulated.waits) == ATTEMPTS - 1
    assert all(wait >= 0 for wait in simulated.waits)
    assert caught.value.retry_after_seconds >= 1
    assert isinstance(caught.value.__cause__, Exception)  # the botocore failure, kept for the log
    assert "injected" not in caught.value.message  # the caller never sees the dependency's own words


def test_aws_clients_make_three_attempts_with_two_and_five_second_timeouts() -> None:
    """The figures the rest of this file reasons with."""
    assert (ATTEMPTS, attempt_seconds(AWS_CLIENT_CONFIG)) == (3, 7)
    assert AWS_CLIENT_CONFIG.retries["mode"] == "standard"  # type: ignore[attr-defined]


@dataclass
class WaitSample:
    first: list[float] = field(default_factory=list)
    second: list[float] = field(default_factory=list)


@pytest.mark.parametrize(
    ("service", "fault", "first_cap"),
    [
        pytest.param("dynamodb", error(400, "ThrottlingException"), 1.0, id="dynamodb throttled"),
        pytest.param("dynamodb", error(500, "InternalServerError"), 0.025, id="dynamodb internal error"),
        pytest.param("kms", error(400, "ThrottlingException"), 1.0, id="kms throttled"),
        pytest.param("kms", raises(ReadTimeoutError), 0.05, id="kms read timeout"),
        pytest.param("s3", error(503, "SlowDown"), 1.0, id="s3 slow down"),
    ],
)
def test_waits_between_attempts_grow_exponentially_with_jitter(
    simulated: SimulatedTime, service: str, fault: Answer, first_cap: float
) -> None:
    """Each wait is a random fraction of a cap that doubles per attempt: throttling starts at 1 s,
    other errors at 25-50 ms. Twenty calls, each on a fresh client (botocore's retry quota, per
    client, stops retrying after a run of failures), show both the growth and the jitter."""
    sample = WaitSample()
    call = {"dynamodb": ADAPTER_CALLS["memory retrieve"], "kms": ADAPTER_CALLS["kms data key"]}.get(
        service, ADAPTER_CALLS["snapshot save"]
    )
    for _ in range(20):
        simulated.waits.clear()
        wire = wire_for(service, simulated).on("*", fault)
        with pytest.raises(UpstreamUnavailable):
            call.call(wire.client)
        first, second = simulated.waits
        sample.first.append(first)
        sample.second.append(second)
    assert all(0 <= wait <= first_cap for wait in sample.first)
    assert all(0 <= wait <= 2 * first_cap for wait in sample.second)
    assert statistics.mean(sample.second) > statistics.mean(sample.first)  # growing
    assert max(sample.second) > first_cap  # the second wait may be longer than the first ever is
    assert len(set(sample.first)) == len(sample.first)  # jitter: no two calls wait alike


def test_a_service_that_asks_for_a_longer_wait_gets_at_most_five_seconds_more(simulated: SimulatedTime) -> None:
    wire = wire_for("dynamodb", simulated).on("*", error(400, "ThrottlingException", retry_after_ms=60_000))
    with pytest.raises(UpstreamUnavailable):
        ADAPTER_CALLS["memory retrieve"].call(wire.client)
    assert len(simulated.waits) == 2
    for attempt, wait in enumerate(simulated.waits, start=1):
        assert wait <= longest_backoff(attempt)


def test_the_deadline_guards_idea_of_botocores_backoff_is_botocores() -> None:
    """pai_core.adapters.aws_deadline bounds botocore's waits with its own copy of these numbers."""
    assert ExponentialBackoff._MAX_BACKOFF == MAX_BACKOFF_SECONDS
    assert ExponentialBackoff._DEFAULT_BACKOFF_CONFIG["throttling_base_scale"] == THROTTLING_BACKOFF_BASE_SECONDS
    assert ExponentialBackoff._RETRY_AFTER_MAX_ADDITIONAL == RETRY_AFTER_EXTRA_SECONDS
    assert max(ExponentialBackoff._SERVICE_BACKOFF_CONFIG["dynamodb"].values()) <= THROTTLING_BACKOFF_BASE_SECONDS


def test_a_transient_failure_that_clears_is_invisible(simulated: SimulatedTime) -> None:
    wire = wire_for("dynamodb", simulated).on(
        "GetItem", error(400, "ThrottlingException"), error(500, "InternalServerError"), ok({})
    )
    assert memories(wire.client).get("ann", "01-some-id") is None
    assert wire.operations() == ["GetItem"] * 3


def test_a_refusal_that_is_not_transient_is_not_retried(simulated: SimulatedTime) -> None:
    wire = wire_for("kms", simulated).on("*", error(400, "InvalidCiphertextException"))
    with pytest.raises(Exception, match="does not unwrap"):
        ADAPTER_CALLS["kms unwrap"].call(wire.client)
    assert wire.operations() == ["Decrypt"]
    assert simulated.waits == []


# == at the handler: a 503 JSON error with Retry-After =============================================


def http_event(route: str, body: dict[str, Any] | None) -> dict[str, Any]:
    return make_event(route, None if body is None else json.dumps(body))


class LambdaContextWithTimeLeft(FakeLambdaContext):
    def __init__(self, millis: int) -> None:
        self._millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self._millis


def send(
    module: ModuleType, route: str, body: dict[str, Any], context: FakeLambdaContext | None = None
) -> tuple[int, dict[str, str], Any]:
    response = module.handler(http_event(route, body), context or FakeLambdaContext())
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    return response["statusCode"], headers, json.loads(response["body"])


@pytest.fixture
def dynamo_backed(simulated: SimulatedTime) -> Iterator[tuple[FakeContainer, Wire]]:
    """The fakes' composition root with the real DynamoDB repositories over a faulty wire."""
    wire = wire_for("dynamodb", simulated)
    container = FakeContainer(
        memory_repository=memories(wire.client),  # type: ignore[arg-type]
        conversations=conversations(wire.client),  # type: ignore[arg-type]
    )
    set_container(container)  # type: ignore[arg-type]
    yield container, wire
    set_container(None)


def assert_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503
    assert int(headers["retry-after"]) >= 1
    assert headers["content-type"] == "application/json"
    assert set(body) == {"error"}
    assert body["error"]["code"] == "service_unavailable"
    assert set(body["error"]) == {"code", "message"}
    for leak in ("Traceback", "botocore", "injected", ".py"):
        assert leak not in body["error"]["message"]


@pytest.mark.parametrize(
    ("module", "route", "body"),
    [
        pytest.param(handlers.memory, "POST /memory", {"action": "store", "content": "x"}, id="store"),
        pytest.param(handlers.memory, "POST /memory", {"action": "retrieve", "id": "01-an-id"}, id="retrieve"),
        pytest.param(handlers.memory, "POST /memory", {"action": "list"}, id="list"),
        pytest.param(handlers.memory, "POST /memory", {"action": "delete", "id": "01-an-id"}, id="delete"),
        pytest.param(handlers.chat, "POST /chat", {"message": "hello"}, id="chat"),
    ],
)
@pytest.mark.parametrize("fault_name", ["throttled", "internal error", "read timeout"])
def test_a_failing_table_is_a_503_with_retry_after(
    dynamo_backed: tuple[FakeContainer, Wire], module: ModuleType, route: str, body: dict[str, Any], fault_name: str
) -> None:
    container, wire = dynamo_backed
    wire.on("*", FAULTS["dynamodb"][fault_name])
    assert_unavailable(*send(module, route, body))
    assert len(wire.sent) == ATTEMPTS  # one operation, its attempts, and nothing after it
    assert container.chat_model.prompts == []


# == no partial writes =============================================================================


def test_a_store_that_fails_writes_nothing_else(simulated: SimulatedTime) -> None:
    """The memory is one PutItem of the whole sealed record; the change stamp moves only after it
    landed, so a failed store leaves no trace at all."""
    wire = wire_for("dynamodb", simulated).on("*", error(500, "InternalServerError"))
    with pytest.raises(UpstreamUnavailable):
        memories(wire.client).add("ann", a_memory(), VECTOR)
    assert set(wire.operations()) == {"PutItem"}
    (item,) = {json.dumps(body["Item"], sort_keys=True) for _, body in wire.sent}  # the same record each time
    assert {"encryptedContent", "encryptedMetadata", "encryptedEmbedding"} <= set(json.loads(item))


def test_a_store_whose_answer_was_lost_is_stored_once_not_refused(simulated: SimulatedTime) -> None:
    """The first attempt landed but its answer timed out; botocore sends it again, and the table
    refuses the copy (the id exists). That refusal names our own record: the store succeeded."""
    wire = wire_for("dynamodb", simulated).on("PutItem", raises(ReadTimeoutError), echo_conditional_failure, ok({}))
    wire.on("UpdateItem", ok({}))
    memories(wire.client).add("ann", a_memory(), VECTOR)
    assert wire.operations() == ["PutItem", "PutItem", "PutItem", "UpdateItem"]  # and the change was recorded
    assert wire.sent[1][1]["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_a_store_refused_for_another_record_with_the_same_id_is_a_conflict(simulated: SimulatedTime) -> None:
    someone_elses = {"owner": {"S": "ann"}, "id": {"S": "x"}, "encryptedContent": {"B": "b3RoZXI="}}
    wire = wire_for("dynamodb", simulated).on(
        "PutItem", error(400, "ConditionalCheckFailedException", Item=someone_elses)
    )
    with pytest.raises(Conflict):
        memories(wire.client).add("ann", a_memory(), VECTOR)
    assert wire.operations() == ["PutItem"]


def test_a_failed_change_stamp_after_the_store_keeps_the_memory_once(
    simulated: SimulatedTime, caplog: pytest.LogCaptureFixture
) -> None:
    """The stamp only tells warm search indexes elsewhere to look; the memory is durable already
    and is neither reported lost (the caller would store it again) nor written twice."""
    wire = wire_for("dynamodb", simulated).on("PutItem", ok({})).on("UpdateItem", error(400, "ThrottlingException"))
    memories(wire.client).add("ann", a_memory(), VECTOR)
    assert wire.operations() == ["PutItem", "PutItem"] + ["UpdateItem"] * ATTEMPTS
    assert "change stamp not moved" in caplog.text


def test_a_conversation_turn_whose_answer_was_lost_is_not_stored_twice(simulated: SimulatedTime) -> None:
    """Without the check, the refused copy looks like two turns in one microsecond, and the turn
    would be written again one microsecond later: a duplicate in the session's history."""
    wire = wire_for("dynamodb", simulated).on("PutItem", raises(ReadTimeoutError), echo_conditional_failure)
    conversations(wire.client).append("ann", "s-1", Turn("user", "hello", NOON))
    assert wire.operations() == ["PutItem", "PutItem"]


def test_two_turns_in_one_microsecond_still_both_land(simulated: SimulatedTime) -> None:
    other_turn = {"sessionId": {"S": "ann#s-1"}, "encryptedContent": {"B": "b3RoZXI="}}
    wire = wire_for("dynamodb", simulated).on(
        "PutItem", error(400, "ConditionalCheckFailedException", Item=other_turn), ok({})
    )
    conversations(wire.client).append("ann", "s-1", Turn("user", "hello", NOON))
    first, second = (int(body["Item"]["timestamp"]["N"]) for _, body in wire.sent)
    assert second == first + 1


# == no request runs past its function's timeout ===================================================


def function_timeouts() -> dict[str, int]:
    """The request handlers' Timeout from the template, by handler module."""
    template = Template.load(Env="dev")
    return {
        spec["Properties"]["Handler"].rsplit(".", 1)[0]: int(spec["Properties"]["Timeout"])
        for spec in template.of_type("AWS::Lambda::Function").values()
        if spec["Properties"]["Handler"]
        in {"handlers.chat.handler", "handlers.memory.handler", "handlers.search.handler"}
    }


def test_worst_cases_fit_the_functions_timeouts() -> None:
    """Arithmetic over the client config, the LLM settings and the template (nothing is timed).

    One AWS call on its own: every attempt connecting and reading to its timeout, and the longest
    waits between them (34 s with the 5 s a service may add per wait, 24 s without). A request
    makes several such calls, and chat a model call too, so no fixed budget covers a request:
    the handler's deadline (the time the function has left, less RESPONSE_MARGIN_SECONDS) does,
    by starting no attempt and no wait that could end after it. What has to hold statically is
    that the deadline leaves room for the work it admits."""
    one_call = worst_case_call_seconds(AWS_CLIENT_CONFIG)
    attempt = attempt_seconds(AWS_CLIENT_CONFIG)
    assert one_call == ATTEMPTS * attempt + sum(longest_backoff(n) for n in range(1, ATTEMPTS))
    assert one_call == 3 * (2 + 5) + (1 + 5) + (2 + 5)

    settings = Settings()
    model_attempt = 2 + settings.llm_timeout_seconds  # Bedrock: connect, then the reply (bootstrap.chat_model)
    timeouts = function_timeouts()
    assert set(timeouts) == {"handlers.chat", "handlers.memory", "handlers.search"}
    for handler, timeout in timeouts.items():
        deadline = timeout - RESPONSE_MARGIN_SECONDS
        assert 0 < deadline < timeout, handler
        # Every request can make at least one whole AWS call, retries and all, before its deadline
        # (when the service asks for no extra wait; when it does, the guard drops the late retry).
        assert one_call - RETRY_AFTER_EXTRA_SECONDS * (ATTEMPTS - 1) <= deadline, handler
    chat_deadline = timeouts["handlers.chat"] - RESPONSE_MARGIN_SECONDS
    # A model answer that takes its whole timeout can still be charged and stored after it.
    assert model_attempt + 2 * attempt <= chat_deadline
    # Two model attempts fit the chat function when the provider asks for no extra wait.
    assert settings.llm_max_attempts * model_attempt + THROTTLING_BACKOFF_BASE_SECONDS <= chat_deadline


@pytest.fixture
def deadline_clock(simulated: SimulatedTime, monkeypatch: pytest.MonkeyPatch) -> SimulatedTime:
    """Deadlines read the simulated clock: attempts and waits advance it, nothing sleeps."""
    monkeypatch.setattr(pai_core.deadline, "time", SimpleNamespace(monotonic=simulated.monotonic))
    return simulated


def guarded_client(service: str, simulated: SimulatedTime) -> Wire:
    client = aws_client(service)
    bound_by_request_deadline(client, seconds_per_attempt=attempt_seconds(AWS_CLIENT_CONFIG))
    return Wire(client, simulated)


SLOW_FAULTS = {
    # Every attempt waits out both timeouts: the longest an attempt can take. Late calls are refused
    # before they send anything.
    "every attempt times out": raises(ReadTimeoutError, takes_seconds=attempt_seconds(AWS_CLIENT_CONFIG)),
    # Throttled at once, but asked to wait as long as botocore allows before each retry. An attempt
    # still fits at the end (it takes no time here), a wait no longer does: late calls try once.
    "throttled, asked to wait": error(400, "ThrottlingException", retry_after_ms=60_000),
}


@pytest.mark.parametrize("handler", ["handlers.chat", "handlers.memory", "handlers.search"])
@pytest.mark.parametrize("fault_name", list(SLOW_FAULTS))
def test_calls_in_a_row_against_a_failing_service_end_before_the_deadline(
    deadline_clock: SimulatedTime, handler: str, fault_name: str
) -> None:
    """A request that keeps calling a service that keeps failing: each call ends in a 503 error,
    the last ones at once, and simulated time never passes the function's timeout."""
    timeout = function_timeouts()[handler]
    wire = guarded_client("dynamodb", deadline_clock).on("*", SLOW_FAULTS[fault_name])
    repository = memories(wire.client)
    attempts_per_call: list[int] = []
    with request_deadline(timeout - RESPONSE_MARGIN_SECONDS):
        for _ in range(20):
            sent_before = len(wire.sent)
            with pytest.raises(UpstreamUnavailable):
                repository.get("ann", "01-some-id")
            assert deadline_clock.now <= timeout - RESPONSE_MARGIN_SECONDS
            attempts_per_call.append(len(wire.sent) - sent_before)
    assert attempts_per_call[0] == ATTEMPTS
    assert attempts_per_call[-1] < ATTEMPTS  # the deadline, not the attempts, ended the later calls
    assert deadline_clock.now <= timeout


def test_without_a_deadline_the_guard_changes_nothing(deadline_clock: SimulatedTime) -> None:
    wire = guarded_client("dynamodb", deadline_clock).on("*", SLOW_FAULTS["every attempt times out"])
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            memories(wire.client).get("ann", "01-some-id")
    assert len(wire.sent) == 3 * ATTEMPTS


def test_an_attempt_that_would_not_finish_in_time_is_not_sent(deadline_clock: SimulatedTime) -> None:
    wire = guarded_client("kms", deadline_clock).on("*", ok({}))
    with request_deadline(attempt_seconds(AWS_CLIENT_CONFIG) - 0.5), pytest.raises(UpstreamUnavailable) as caught:
        ADAPTER_CALLS["kms data key"].call(wire.client)
    assert wire.sent == []
    assert "not enough time" in caught.value.message


def test_a_retry_whose_wait_could_overrun_the_deadline_is_not_made(deadline_clock: SimulatedTime) -> None:
    wire = guarded_client("s3", deadline_clock).on("*", error(503, "SlowDown"))
    with request_deadline(attempt_seconds(AWS_CLIENT_CONFIG) + 1), pytest.raises(UpstreamUnavailable):
        ADAPTER_CALLS["snapshot save"].call(wire.client)
    assert wire.operations() == ["PutObject"]
    assert deadline_clock.waits == []


def test_the_composition_roots_clients_are_guarded(deadline_clock: SimulatedTime) -> None:
    from pai_core.bootstrap import Container

    client = Container(Settings(endpoint_url=ENDPOINT)).client("dynamodb")
    wire = Wire(client, deadline_clock).on("*", ok({}))
    with request_deadline(1.0), pytest.raises(UpstreamUnavailable):
        memories(client).get("ann", "01-some-id")
    assert wire.sent == []


def test_a_request_that_starts_late_answers_503_inside_its_time(
    deadline_clock: SimulatedTime, dynamo_backed: tuple[FakeContainer, Wire]
) -> None:
    """Through the memory handler: ten seconds left (a slow cold start, say), DynamoDB timing out.
    One attempt fits, a second would not: the request answers 503 after the first."""
    container, _ = dynamo_backed
    client = aws_client("dynamodb")
    bound_by_request_deadline(client, seconds_per_attempt=attempt_seconds(AWS_CLIENT_CONFIG))
    wire = Wire(client, deadline_clock).on("*", SLOW_FAULTS["every attempt times out"])
    container.memory_repository = memories(client)  # type: ignore[assignment]
    container.__post_init__()
    status, headers, body = send(
        handlers.memory, "POST /memory", {"action": "store", "content": "x"}, LambdaContextWithTimeLeft(10_000)
    )
    assert_unavailable(status, headers, body)
    assert wire.operations() == ["PutItem"]
    assert deadline_clock.now <= 10


# -- the OpenAI-compatible provider (its own retries, bounded the same way) ------------------------

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class ModelEndpoint:
    """An OpenAI-compatible endpoint as an httpx transport: scripted answers, counted requests."""

    def __init__(self, *answers: tuple[int, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.requests = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        status, headers = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        body = COMPLETION if status == 200 else {"error": {"message": "injected", "type": "server_error"}}
        return httpx2.Response(status, json=body, headers=headers)


@pytest.fixture
def model_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(llm_openai, "time", SimpleNamespace(sleep=waits.append))
    return waits


def openai_model(endpoint: ModelEndpoint) -> OpenAiChatModel:
    return OpenAiChatModel(
        base_url="http://llm.test/v1",
        api_key="k",
        model="m",
        context_tokens=2048,
        timeout_seconds=12,
        max_attempts=2,
        http_client=httpx2.Client(transport=httpx2.MockTransport(endpoint)),
    )


MESSAGES = [ChatMessage(role="user", content="hi")]
STILL = 0.0  # a deadline clock that does not move: only what is left at the start matters


def test_the_model_endpoint_is_retried_after_a_jittered_backoff(model_waits: list[float]) -> None:
    endpoint = ModelEndpoint((500, {}), (200, {}))
    assert openai_model(endpoint).complete(MESSAGES, max_tokens=8).text == "Hello."
    assert endpoint.requests == 2
    (wait,) = model_waits
    assert 0.375 <= wait <= FIRST_RETRY_WAIT_SECONDS


def test_the_model_endpoint_gets_its_configured_attempts_then_a_503(model_waits: list[float]) -> None:
    endpoint = ModelEndpoint((503, {}))
    with pytest.raises(UpstreamUnavailable):
        openai_model(endpoint).complete(MESSAGES, max_tokens=8)
    assert endpoint.requests == 2


@pytest.mark.parametrize(
    ("left", "answer", "requests"),
    [
        pytest.param(29.0, (500, {}), 2, id="a retry fits"),
        pytest.param(12.2, (500, {}), 1, id="a retry would not fit"),
        pytest.param(29.0, (429, {"retry-after": "20"}), 1, id="the wait asked for would not fit"),
        pytest.param(11.0, (200, {}), 0, id="not even one attempt fits"),
    ],
)
def test_the_model_endpoint_is_only_tried_while_the_deadline_has_room(
    model_waits: list[float], left: float, answer: tuple[int, dict[str, str]], requests: int
) -> None:
    endpoint = ModelEndpoint(answer)
    with request_deadline(left, clock=lambda: STILL), pytest.raises(UpstreamUnavailable) as caught:
        openai_model(endpoint).complete(MESSAGES, max_tokens=8)
    assert endpoint.requests == requests
    if answer[0] == 429:
        assert caught.value.retry_after_seconds == 20  # passed on to the caller instead of waited out


def test_a_long_retry_after_is_passed_on_rather_than_waited_out(model_waits: list[float]) -> None:
    endpoint = ModelEndpoint((429, {"retry-after": str(int(LONGEST_ASKED_WAIT_SECONDS) + 1)}))
    with pytest.raises(UpstreamUnavailable) as caught:
        openai_model(endpoint).complete(MESSAGES, max_tokens=8)  # no deadline at all
    assert (endpoint.requests, model_waits) == (1, [])
    assert caught.value.retry_after_seconds == LONGEST_ASKED_WAIT_SECONDS + 1
