"""Metrics (issue 16, part 4): the EMF adapter's lines, each handler's flush for a success and an
error, the domain's counts through the Metrics port (index refresh kind, KMS calls, model tokens),
and that no user id is ever a dimension."""

from __future__ import annotations

import base64
import json
import warnings
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

import handlers.chat
import handlers.documents
import handlers.memory
import handlers.search
from handlers import document_ingest
from handlers import learning as learning_handler
from handlers._observability import record_request
from pai_core.adapters.kms import KmsKeyService
from pai_core.adapters.metrics_emf import EmfMetrics
from pai_core.bootstrap import Container
from pai_core.config import ConfigError, Settings
from pai_core.errors import IntegrityError, UpstreamUnavailable
from pai_core.ports import NoMetrics
from pai_core.search import IndexPolicy, LiveMemoryIndex
from pai_core.services import MemoryService
from tests.fakes import FakeContainer, FakeLambdaContext, HashingEmbedder, InMemoryBranchKeyStore, fake_cipher
from tests.fakes_search import FakeS3Client, InMemoryMemoryStore, ManualClock
from tests.unit.test_authentication import authorize
from tests.unit.test_handlers import call, make_event
from tests.unit.test_learning import World


class CountingMetrics:
    """The Metrics port as a Counter: (name, sorted dimensions) -> total."""

    def __init__(self) -> None:
        self.counted: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def count(self, name: str, value: int = 1, /, **dimensions: str) -> None:
        self.counted[(name, tuple(sorted(dimensions.items())))] += value

    def of(self, name: str) -> dict[tuple[tuple[str, str], ...], int]:
        return {dims: total for (metric, dims), total in self.counted.items() if metric == name}


def every_dimension_value(container: FakeContainer) -> set[str]:
    return {value for (_, dims) in container.metrics.counts() for _, value in dims}


# -- the adapter --------------------------------------------------------------------------------------


def test_counts_are_summed_and_written_once_per_dimension_set() -> None:
    lines: list[str] = []
    metrics = EmfMetrics("PAI/test", emit=lines.append)
    metrics.count("Requests", route="POST /chat", status="2xx")
    metrics.count("Requests", route="POST /chat", status="2xx")
    metrics.count("ModelInputTokens", 120, purpose="chat")
    metrics.count("ModelOutputTokens", 30, purpose="chat")
    metrics.flush()
    documents = sorted((json.loads(line) for line in lines), key=sorted)
    assert len(documents) == 2
    by_first_metric = {d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]: d for d in documents}
    tokens, requests = by_first_metric["ModelInputTokens"], by_first_metric["Requests"]
    directive = requests["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "PAI/test"
    assert sorted(directive["Dimensions"][0]) == ["route", "service", "status"]
    assert directive["Metrics"] == [{"Name": "Requests", "Unit": "Count"}]
    assert (requests["route"], requests["status"], requests["service"], requests["Requests"]) == (
        "POST /chat",
        "2xx",
        "pai",
        [2.0],
    )
    assert (tokens["ModelInputTokens"], tokens["ModelOutputTokens"], tokens["purpose"]) == ([120.0], [30.0], "chat")
    lines.clear()
    metrics.flush()  # what was written is not written again
    assert lines == []


def test_by_default_the_lines_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = EmfMetrics("PAI/test")
    metrics.count("KmsCalls", operation="Decrypt", outcome="ok")
    metrics.flush()
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["KmsCalls"] == [1.0]


def test_an_invocation_that_counted_nothing_writes_nothing_and_warns_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Powertools warns "No application metrics to publish" on an empty flush
        EmfMetrics("PAI/test").flush()
        NoMetrics().flush()
    assert capsys.readouterr().out == ""


def test_only_known_dimension_names_and_short_values_are_accepted() -> None:
    metrics = EmfMetrics("PAI/test", emit=lambda line: None)
    with pytest.raises(ValueError, match="'owner' is not a metric dimension"):
        metrics.count("Requests", owner="alice")
    with pytest.raises(ValueError, match="short text value"):
        metrics.count("Requests", route="x" * 65)
    with pytest.raises(ValueError, match="short text value"):
        metrics.count("Requests", route="")


def test_the_namespace_comes_from_the_environment_and_metrics_are_off_without_one() -> None:
    assert Settings.from_env({}).metrics_namespace is None
    assert Settings.from_env({"PAI_METRICS_NAMESPACE": "PAI/prod"}).metrics_namespace == "PAI/prod"
    disabled = {"PAI_METRICS_NAMESPACE": "PAI/prod", "POWERTOOLS_METRICS_DISABLED": "true"}
    assert Settings.from_env(disabled).metrics_namespace is None
    with pytest.raises(ConfigError, match="PAI_METRICS_NAMESPACE"):
        Settings.from_env({"PAI_METRICS_NAMESPACE": "AWS/Lambda"})
    assert isinstance(Container(Settings()).metrics, NoMetrics)
    assert isinstance(Container(Settings(metrics_namespace="PAI/dev")).metrics, EmfMetrics)
    # Tracing: off unless Powertools' own switch says "false" (the stack's EnableTracing).
    assert Settings.from_env({}).tracing is False
    assert Settings.from_env({"POWERTOOLS_TRACE_DISABLED": "false"}).tracing is True


# -- the HTTP handlers: one flush per invocation, route and outcome -----------------------------------


HTTP_CASES = [
    # (module, route, a successful body, its status, a failing body, its status and code)
    (handlers.memory, "POST /memory", {"action": "store", "content": "Miso is my cat"}, 201, {"action": "nope"}, 400),
    (handlers.search, "POST /search", {"query": "cat"}, 200, {"query": ""}, 400),
    (handlers.chat, "POST /chat", {"message": "hello"}, 200, {"message": ""}, 400),
    (handlers.documents, "POST /documents", {"action": "list"}, 200, {"action": "get", "id": "0" * 32}, 404),
]


@pytest.mark.parametrize(("module", "route", "good", "good_status", "bad", "bad_status"), HTTP_CASES)
def test_each_http_handler_flushes_its_request_by_route_and_outcome(
    fake_container: FakeContainer, module: Any, route: str, good: Any, good_status: int, bad: Any, bad_status: int
) -> None:
    metrics = fake_container.metrics
    ok = call(module, make_event(route, json.dumps(good)))
    assert ok.status == good_status
    assert metrics.counts()[("Requests", frozenset({("service", "pai"), ("route", route), ("status", "2xx")}))] == 1
    written = len(metrics.lines)
    assert written >= 1
    failed = call(module, make_event(route, json.dumps(bad)))
    assert failed.status == bad_status
    code = failed.body["error"]["code"]
    key = ("Requests", frozenset({("service", "pai"), ("route", route), ("status", "4xx"), ("code", code)}))
    assert metrics.counts()[key] == 1
    assert len(metrics.lines) > written  # flushed at the end of the second invocation too
    assert Settings().owner not in every_dimension_value(fake_container)


def test_a_server_error_is_counted_with_its_code(fake_container: FakeContainer) -> None:
    fake_container.storage_down = True
    reply = call(handlers.memory, make_event("GET /health", None))
    assert reply.status == 503
    assert fake_container.metrics.total("Requests", route="GET /health", status="5xx", code="service_unavailable") == 1


def test_the_chat_counts_the_models_tokens(fake_container: FakeContainer) -> None:
    reply = call(handlers.chat, make_event("POST /chat", json.dumps({"message": "what is my cat called"})))
    usage = reply.body["usage"]
    metrics = fake_container.metrics
    assert metrics.total("ModelInputTokens", purpose="chat") == usage["inputTokens"] > 0
    assert metrics.total("ModelOutputTokens", purpose="chat") == usage["outputTokens"] > 0


def test_a_route_or_code_that_is_not_ours_is_other() -> None:
    metrics = CountingMetrics()
    record_request(metrics, {"routeKey": "POST /memory/alice@example.com"}, {"statusCode": 200})
    record_request(metrics, {"routeKey": "POST /memory"}, {"statusCode": 400, "body": '{"error": {"code": "Alice!"}}'})
    record_request(metrics, {"routeKey": "POST /memory"}, None)  # the handler raised
    assert metrics.of("Requests") == {
        (("route", "other"), ("status", "2xx")): 1,
        (("code", "other"), ("route", "POST /memory"), ("status", "4xx")): 1,
        (("code", "internal_error"), ("route", "POST /memory"), ("status", "5xx")): 1,
    }


def test_no_user_id_is_ever_a_dimension(fake_container: FakeContainer) -> None:
    secrets: list[str] = []
    for user in ("alice", "bob@example.com"):
        event = make_event("POST /memory", json.dumps({"action": "store", "content": f"{user} likes tea"}))
        event["requestContext"]["authorizer"] = {"lambda": {"userId": user, "keyId": "0123456789abcdef"}}
        assert call(handlers.memory, event).status == 201
        issued = fake_container.api_keys.issue(user)
        answer = authorize(f"Bearer {issued.key}")
        assert answer["context"]["userId"] == user
        secrets.append(issued.key)
        secrets.append(answer["context"]["keyId"])
    values = every_dimension_value(fake_container)
    assert values and not values & {"alice", "bob@example.com", Settings().owner}
    assert not any(secret in value for value in values for secret in secrets)
    assert fake_container.metrics.total("Authorizations", outcome="ok") == 2


# -- the authorizer and the queue handlers ----------------------------------------------------------------


def test_the_authorizer_counts_its_verdicts(fake_container: FakeContainer) -> None:
    issued = fake_container.api_keys.issue("alice")
    for header in (f"Bearer {issued.key}", "Bearer nonsense", None):
        authorize(header)
    metrics = fake_container.metrics
    assert metrics.total("Authorizations", outcome="ok") == 1
    refused = {dict(dims)["outcome"] for (name, dims) in metrics.counts() if name == "Authorizations"} - {"ok"}
    assert "missing" in refused and refused <= {"missing", "malformed", "invalid"}


def test_the_learning_handler_counts_turns_and_memories(fake_container: FakeContainer) -> None:
    world = World()
    fake_container.learning = world.learning  # type: ignore[attr-defined]
    job = world.say("By the way, I live in Berlin.")
    event = {"Records": [{"messageId": "m1", "body": job.to_json()}, {"messageId": "m2", "body": "junk"}]}
    assert learning_handler.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    metrics = fake_container.metrics
    assert metrics.total("LearningTurns", outcome="learned") == 1
    assert metrics.total("LearningTurns", outcome="invalid") == 1
    assert metrics.total("LearnedMemories", outcome="stored") == 1
    world.repository.fail_with = UpstreamUnavailable("DynamoDB cannot be reached")
    again = world.say("I love jazz.")
    failed = learning_handler.handler({"Records": [{"messageId": "m3", "body": again.to_json()}]}, FakeLambdaContext())
    assert failed == {"batchItemFailures": [{"itemIdentifier": "m3"}]}
    assert metrics.total("LearningTurns", outcome="failed") == 1


def test_the_ingest_handler_counts_outcomes(fake_container: FakeContainer) -> None:
    from tests.unit.test_document_ingest import LONG, ListQueue, record

    documents = fake_container.documents
    queue = ListQueue()
    documents._queue = queue
    documents.inline_max_passages = 2
    content = base64.b64encode(LONG).decode()
    body = {"action": "upload", "name": "l.txt", "contentType": "text/plain", "content": content}
    assert call(handlers.documents, make_event("POST /documents", json.dumps(body))).status == 202
    (job,) = queue.jobs
    real_ingest = documents.ingest

    def broken(job: Any) -> str:
        raise UpstreamUnavailable("model down")

    documents.ingest = broken  # type: ignore[method-assign]
    document_ingest.handler({"Records": [record(job), record("junk", message_id="m2")]}, FakeLambdaContext())
    documents.ingest = real_ingest  # type: ignore[method-assign]
    document_ingest.handler({"Records": [record(job, receives=2)]}, FakeLambdaContext())
    metrics = fake_container.metrics
    assert metrics.total("DocumentIngestions", outcome="retry") == 1
    assert metrics.total("DocumentIngestions", outcome="invalid") == 1
    assert metrics.total("DocumentIngestions", outcome="ready") == 1
    assert metrics.total("Requests", route="POST /documents", status="2xx") == 1


def test_a_handler_that_raises_still_flushes(fake_container: FakeContainer) -> None:
    def exploding(job: Any) -> str:
        raise RuntimeError("boom")

    fake_container.documents.ingest = exploding  # type: ignore[method-assign]
    fake_container.metrics.count("KmsCalls", operation="Decrypt", outcome="ok")  # counted before the failure
    event = {"Records": [{"messageId": "m1", "body": "junk"}]}
    document_ingest.handler(event, FakeLambdaContext())
    assert fake_container.metrics.total("KmsCalls") == 1


# -- the domain, through the port -----------------------------------------------------------------------

SHARED_CIPHER = fake_cipher()  # one "KMS" for every container of these tests, as one stack has
SHARED_CIPHER.keyring.active_key("alice")


def live_index(
    store: InMemoryMemoryStore, s3: FakeS3Client, clock: ManualClock, metrics: CountingMetrics, **policy: Any
) -> tuple[LiveMemoryIndex, MemoryService]:
    from pai_core.adapters.s3 import S3SnapshotStore

    index = LiveMemoryIndex(
        store,
        {"memory": store},
        S3SnapshotStore(s3, "bucket", SHARED_CIPHER),  # type: ignore[arg-type]
        dimensions=HashingEmbedder.dimensions,
        policy=IndexPolicy(**{"ann": None, "snapshot_min_vectors": 5, "snapshot_rebuild_changes": 3, **policy}),
        wall_clock=clock,
        monotonic=clock,
        metrics=metrics,
    )
    return index, MemoryService(store, HashingEmbedder(), store.clock, index=index)


def test_the_index_counts_how_each_search_found_it() -> None:
    from tests.fakes import FixedClock

    store, s3, clock = InMemoryMemoryStore(clock=FixedClock()), FakeS3Client(), ManualClock()
    metrics = CountingMetrics()
    _, memories = live_index(store, s3, clock, metrics, full_reload_seconds=900)
    for i in range(6):
        store.clock.advance(seconds=1)
        memories.remember("alice", content=f"note {i}", category="general", metadata={})
    memories.search("alice", "note", top=3)  # cold, no snapshot yet: the table
    memories.search("alice", "note", top=3)  # nothing changed
    _, other_memories = live_index(store, s3, clock, CountingMetrics())
    store.clock.advance(seconds=1)
    other_memories.remember("alice", content="note from elsewhere", category="general", metadata={})
    memories.search("alice", "note", top=3)  # another container's write: the change log
    clock.advance(901)
    memories.search("alice", "note", top=3)  # the periodic rebuild
    assert metrics.of("SearchIndexRefresh") == {
        (("kind", "table"),): 1,
        (("kind", "warm"),): 1,
        (("kind", "changes"),): 1,
        (("kind", "reload"),): 1,
    }
    assert metrics.of("SearchIndexSnapshotWrites") == {(("outcome", "saved"),): 1}
    # A new container over the same bucket starts from that snapshot.
    cold_metrics = CountingMetrics()
    _, cold_memories = live_index(store, s3, clock, cold_metrics, full_reload_seconds=900)
    cold_memories.search("alice", "note", top=3)
    assert cold_metrics.of("SearchIndexRefresh") == {(("kind", "snapshot"),): 1}


class FakeKmsClient:
    """generate_data_key / decrypt as boto3's KMS client answers them, or its refusal."""

    def __init__(self) -> None:
        self.refuse: str | None = None

    def generate_data_key(self, **_: Any) -> dict[str, bytes]:
        return {"Plaintext": b"k" * 32, "CiphertextBlob": b"wrapped"}

    def decrypt(self, **_: Any) -> dict[str, bytes]:
        if self.refuse:
            raise ClientError({"Error": {"Code": self.refuse}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Decrypt")
        return {"Plaintext": b"k" * 32}


def test_kms_calls_are_counted_by_operation_and_outcome() -> None:
    from pai_core.crypto import BranchKeyring, KeyringPolicy

    metrics = CountingMetrics()
    client = FakeKmsClient()
    kms = KmsKeyService(client, "alias/pai-test", metrics=metrics)  # type: ignore[arg-type]
    keyring = BranchKeyring(InMemoryBranchKeyStore(), kms, keystore_name="pai-keystore-test", policy=KeyringPolicy())
    keyring.active_key("alice")
    keyring.active_key("alice")  # cached: no second call
    keyring.drop_cached("alice")
    keyring.active_key("alice")  # unwrapped again
    context = {"purpose": "test"}
    client.refuse = "InvalidCiphertextException"
    with pytest.raises(IntegrityError):
        kms.decrypt_data_key(b"wrapped", context)
    client.refuse = "ThrottlingException"
    with pytest.raises(UpstreamUnavailable):
        kms.decrypt_data_key(b"wrapped", context)
    assert metrics.of("KmsCalls") == {
        (("operation", "GenerateDataKey"), ("outcome", "ok")): 1,
        (("operation", "Decrypt"), ("outcome", "ok")): 1,
        (("operation", "Decrypt"), ("outcome", "refused")): 1,
        (("operation", "Decrypt"), ("outcome", "error")): 1,
    }


def test_learning_by_model_counts_its_tokens() -> None:
    from pai_core.learning.service import LearningService
    from tests.unit.test_learning import FakeStructuredModel, facts

    metrics = CountingMetrics()
    model = FakeStructuredModel(facts(("I live in Berlin.", "add", None)))
    world = World(mode="model", model=model)
    learning = LearningService(
        world.memories, world.conversations, world.clock, mode="model", model=model, metrics=metrics
    )
    learning.learn_turn(world.say("I live in Berlin."))
    assert set(metrics.of("ModelInputTokens")) == {(("purpose", "learning"),)}
    assert set(metrics.of("ModelOutputTokens")) == {(("purpose", "learning"),)}


def test_metrics_that_cannot_be_written_do_not_change_the_answer(
    fake_container: FakeContainer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(CountingMetrics):
        def flush(self) -> None:
            raise OSError("stdout is gone")

    fake_container.metrics = Broken()  # type: ignore[assignment]
    reply = call(handlers.memory, make_event("POST /memory", json.dumps({"action": "store", "content": "tea"})))
    assert reply.status == 201
    assert "metrics of this invocation were not written" in caplog.text
