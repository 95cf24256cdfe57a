"""Idempotency-Key (pai_core/idempotency.py, handlers/_http.idempotent): the header's validation, the
sealing of recorded answers, and the whole flow over an in-memory persistence layer, through the
handlers as API Gateway calls them. No network."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

import handlers.chat
import handlers.memory
from pai_core.errors import IntegrityError, InvalidInput, NotFound, UpstreamUnavailable
from pai_core.idempotency import (
    MAX_SEALED_BYTES,
    Answer,
    AnswerNotKept,
    IdempotencyKeyReused,
    IdempotentRequests,
    RequestInProgress,
    SealedAnswers,
    parse_idempotency_key,
)
from tests.fakes import FakeContainer, FakeLambdaContext, as_user, fake_cipher
from tests.unit.test_chat_stream import StreamingContext, parse_events
from tests.unit.test_handlers import make_event

TABLE = "pai-idempotency-test"


class InMemoryPersistence(BasePersistenceLayer):
    """Powertools' persistence contract over a dict, with the conditional put its DynamoDB layer makes."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, DataRecord] = {}
        self.down = False
        self.fail_completing = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("the table cannot be reached")

    def _get_record(self, idempotency_key: str) -> DataRecord:
        self._check()
        if idempotency_key not in self.items:
            raise IdempotencyItemNotFoundError
        return copy.copy(self.items[idempotency_key])

    def _put_record(self, data_record: DataRecord) -> None:
        self._check()
        existing = self.items.get(data_record.idempotency_key)
        if existing is not None and not existing.is_expired:
            raise IdempotencyItemAlreadyExistsError
        self.items[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        self._check()
        if self.fail_completing:
            raise ConnectionError("the table went away")
        self.items[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        self._check()
        self.items.pop(data_record.idempotency_key, None)

    def stored_text(self) -> str:
        return json.dumps([vars(record) for record in self.items.values()], default=str)


# -- the header ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "x" * 128, "0b6c5a1e-7f0e-4b8e-9f3a-2d1c0e9b8a7f", "with spaces and ~!@#$%^&*()"]
)
def test_printable_ascii_keys_of_1_to_128_characters_are_accepted(value: str) -> None:
    assert parse_idempotency_key(value) == value


def test_no_header_is_no_key() -> None:
    assert parse_idempotency_key(None) is None


REFUSED = [
    "",
    " ",
    " padded",
    "padded ",
    "x" * 129,
    "tab\there",
    "line\nbreak",
    "caf\u00e9",
    "\x7f",
    "nul\x00",
    "\u2603",
]


@pytest.mark.parametrize("value", REFUSED)
def test_other_values_are_refused_naming_the_header(value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_idempotency_key(value)
    assert refused.value.field == "Idempotency-Key"


# -- sealing -------------------------------------------------------------------------------------


def sealer(cipher: Any, *, owner: str = "alice", scope: str = "POST /memory", key: str = "k1") -> SealedAnswers:
    return SealedAnswers(cipher, table=TABLE, owner=owner, scope=scope, key=key)


def test_a_recorded_answer_round_trips_and_holds_no_plaintext() -> None:
    cipher = fake_cipher()
    answer = Answer(201, json.dumps({"reply": "your locker code is 4417"}), {"Content-Type": "application/json"})
    record = sealer(cipher).to_dict(answer)
    assert "4417" not in json.dumps(record)
    assert "locker" not in json.dumps(record)
    assert record["status"] == 201
    assert record["headers"] == {"Content-Type": "application/json"}
    assert sealer(cipher).from_dict(json.loads(json.dumps(record))) == answer


@pytest.mark.parametrize(
    "other", [{"owner": "mallory"}, {"key": "k2"}, {"scope": "POST /chat"}], ids=["owner", "key", "scope"]
)
def test_an_answer_opens_only_for_its_owner_scope_and_key(other: dict[str, str]) -> None:
    cipher = fake_cipher()
    cipher.encrypt(b"", sealer(cipher, owner="mallory")._context)  # mallory has a branch key too
    record = sealer(cipher).to_dict(Answer(200, "secret"))
    with pytest.raises(IntegrityError):
        sealer(cipher, **other).from_dict(record)


def test_a_tampered_answer_fails_authentication() -> None:
    cipher = fake_cipher()
    record = sealer(cipher).to_dict(Answer(200, "secret"))
    sealed = bytearray(base64.b64decode(record["sealed"]))
    sealed[-1] ^= 1
    record["sealed"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(IntegrityError):
        sealer(cipher).from_dict(record)


def test_an_answer_too_large_for_the_record_is_kept_without_its_body() -> None:
    cipher = fake_cipher()
    record = sealer(cipher).to_dict(Answer(200, "\U0001f600" * (MAX_SEALED_BYTES // 4 + 1)))
    assert "sealed" not in record
    with pytest.raises(AnswerNotKept):
        sealer(cipher).from_dict(record)


# -- the flow ------------------------------------------------------------------------------------


@pytest.fixture
def persistence() -> InMemoryPersistence:
    return InMemoryPersistence()


@pytest.fixture
def requests(persistence: InMemoryPersistence) -> IdempotentRequests:
    return IdempotentRequests(persistence, fake_cipher(), table=TABLE)


class Work:
    def __init__(self, status: int = 201) -> None:
        self.calls = 0
        self.status = status

    def __call__(self) -> Answer:
        self.calls += 1
        return Answer(self.status, json.dumps({"n": self.calls}))


def run(
    requests: IdempotentRequests, work: Callable[[], Answer], *, owner: str = "alice", key: str = "k", body: Any = None
) -> Answer:
    return requests.run(
        owner,
        scope="POST /memory",
        key=key,
        body=body if body is not None else {"content": "x"},
        work=work,
        lambda_context=FakeLambdaContext(),
    )


def test_a_repeat_gets_the_first_answer_without_doing_the_work_again(requests: IdempotentRequests) -> None:
    work = Work()
    first = run(requests, work)
    assert run(requests, work) == first
    assert work.calls == 1


def test_the_same_key_with_another_body_is_a_conflict(requests: IdempotentRequests) -> None:
    work = Work()
    run(requests, work)
    with pytest.raises(IdempotencyKeyReused) as refused:
        run(requests, work, body={"content": "y"})
    assert refused.value.code == "idempotency_key_reused"
    assert work.calls == 1


def test_keys_are_scoped_per_user(requests: IdempotentRequests) -> None:
    work = Work()
    alice = run(requests, work, owner="alice")
    bob = run(requests, work, owner="bob", body={"content": "something else entirely"})
    assert (alice.body, bob.body) == ('{"n": 1}', '{"n": 2}')


def test_the_record_holds_hashes_and_a_sealed_answer_only(
    requests: IdempotentRequests, persistence: InMemoryPersistence
) -> None:
    requests.run(
        "alice",
        scope="POST /memory",
        key="my-key",
        body={"content": "the plum tree by the gate"},
        work=lambda: Answer(200, json.dumps({"content": "the plum tree by the gate"})),
    )
    stored = persistence.stored_text()
    for plaintext in ("plum", "alice", "my-key"):
        assert plaintext not in stored


def test_an_unsuccessful_answer_is_not_recorded(requests: IdempotentRequests) -> None:
    failing, succeeding = Work(status=503), Work()
    assert run(requests, failing).status == 503
    assert run(requests, succeeding).status == 201
    assert run(requests, succeeding).body == '{"n": 1}'


def test_an_error_raised_by_the_work_is_not_recorded(requests: IdempotentRequests) -> None:
    def missing() -> Answer:
        raise NotFound("no such memory")

    with pytest.raises(NotFound):
        requests.run("alice", scope="POST /memory", key="k", body={}, work=missing)
    assert run(requests, Work(), body={}).body == '{"n": 1}'


def test_a_repeat_while_the_first_is_in_progress_is_told_to_retry(requests: IdempotentRequests) -> None:
    def repeat_inside() -> Answer:
        return run(requests, Work())

    with pytest.raises(RequestInProgress) as refused:
        run(requests, repeat_inside)
    assert refused.value.code == "request_in_progress"
    assert refused.value.retry_after_seconds >= 1


def test_storage_that_cannot_be_reached_is_a_503(
    requests: IdempotentRequests, persistence: InMemoryPersistence
) -> None:
    persistence.down = True
    work = Work()
    with pytest.raises(UpstreamUnavailable):
        run(requests, work)
    assert work.calls == 0


def test_work_done_is_answered_even_when_recording_it_fails(
    requests: IdempotentRequests, persistence: InMemoryPersistence
) -> None:
    persistence.fail_completing = True
    assert run(requests, Work()).body == '{"n": 1}'


# -- through the handlers ------------------------------------------------------------------------


@pytest.fixture
def installed(fake_container: FakeContainer, persistence: InMemoryPersistence) -> Iterator[InMemoryPersistence]:
    fake_container.idempotency = IdempotentRequests(  # type: ignore[attr-defined]
        persistence, fake_cipher(), table=TABLE
    )
    yield persistence


def post(module: Any, route: str, body: dict[str, Any], key: str | None, *, user: str | None = None) -> Any:
    event = make_event(route, json.dumps(body))
    if user is not None:
        as_user(event, user)
    if key is not None:
        event["headers"]["idempotency-key"] = key
    response = module.handler(event, FakeLambdaContext())
    return response["statusCode"], response.get("headers") or {}, response["body"]


def stored_contents(container: FakeContainer, owner: str) -> list[str]:
    return [memory.content for memory in container.memory_repository.all_memories(owner)]


def test_a_repeated_store_stores_once_and_answers_the_same(
    installed: InMemoryPersistence, fake_container: FakeContainer
) -> None:
    body = {"action": "store", "content": "Ana's birthday is on the 3rd of May"}
    first = post(handlers.memory, "POST /memory", body, "store-1")
    again = post(handlers.memory, "POST /memory", body, "store-1")
    assert first[0] == 201
    assert again == first
    owner = fake_container.settings.owner
    assert stored_contents(fake_container, owner) == ["Ana's birthday is on the 3rd of May"]
    assert "Ana" not in installed.stored_text()


def test_a_reused_key_on_the_memory_route_is_a_409(installed: InMemoryPersistence) -> None:
    post(handlers.memory, "POST /memory", {"action": "store", "content": "one"}, "k")
    status, _, body = post(handlers.memory, "POST /memory", {"action": "store", "content": "two"}, "k")
    assert status == 409
    assert json.loads(body)["error"]["code"] == "idempotency_key_reused"


def test_a_bad_header_is_a_400_naming_it(installed: InMemoryPersistence) -> None:
    status, _, body = post(handlers.memory, "POST /memory", {"action": "store", "content": "one"}, "x" * 129)
    assert status == 400
    assert json.loads(body)["error"]["field"] == "Idempotency-Key"
    assert installed.items == {}


def test_an_invalid_body_is_refused_before_any_record(installed: InMemoryPersistence) -> None:
    status, _, _ = post(handlers.memory, "POST /memory", {"action": "store", "content": ""}, "k")
    assert status == 400
    assert installed.items == {}


def test_actions_that_store_nothing_do_not_act_on_the_header(
    installed: InMemoryPersistence, fake_container: FakeContainer
) -> None:
    stored = json.loads(post(handlers.memory, "POST /memory", {"action": "store", "content": "one"}, None)[2])
    for body in ({"action": "list"}, {"action": "retrieve", "id": stored["id"]}):
        first = post(handlers.memory, "POST /memory", body, "same-key")
        assert first[0] == 200
    assert installed.items == {}
    assert post(handlers.memory, "POST /memory", {"action": "delete", "id": stored["id"]}, "same-key")[0] == 200
    assert post(handlers.memory, "POST /memory", {"action": "delete", "id": stored["id"]}, "same-key")[0] == 404


def test_a_malformed_header_is_a_400_on_any_action(installed: InMemoryPersistence) -> None:
    status, _, body = post(handlers.memory, "POST /memory", {"action": "list"}, "not\tvalid")
    assert status == 400
    assert json.loads(body)["error"]["field"] == "Idempotency-Key"


def test_a_request_in_progress_is_a_409_with_retry_after(
    installed: InMemoryPersistence, fake_container: FakeContainer
) -> None:
    body = {"action": "store", "content": "one"}
    post(handlers.memory, "POST /memory", body, "k")
    for record in installed.items.values():  # as if the first were still running
        record._status = "INPROGRESS"
    status, headers, reply = post(handlers.memory, "POST /memory", body, "k")
    assert status == 409
    assert json.loads(reply)["error"]["code"] == "request_in_progress"
    assert int(headers["Retry-After"]) >= 1


def test_idempotency_storage_down_is_a_503(installed: InMemoryPersistence, fake_container: FakeContainer) -> None:
    installed.down = True
    status, headers, _ = post(handlers.memory, "POST /memory", {"action": "store", "content": "one"}, "k")
    assert status == 503
    assert "Retry-After" in headers
    assert stored_contents(fake_container, fake_container.settings.owner) == []


def test_a_repeated_chat_answers_the_first_reply_without_asking_the_model_again(
    installed: InMemoryPersistence, fake_container: FakeContainer
) -> None:
    body = {"message": "Where did I park?", "sessionId": "s1"}
    first = post(handlers.chat, "POST /chat", body, "chat-1")
    asked = len(fake_container.chat_model.prompts)
    again = post(handlers.chat, "POST /chat", body, "chat-1")
    assert first[0] == 200
    assert again == first
    assert len(fake_container.chat_model.prompts) == asked
    assert "park" not in installed.stored_text()


def test_a_repeated_streamed_chat_gets_the_same_events(
    installed: InMemoryPersistence, fake_container: FakeContainer
) -> None:
    body = {"message": "Where did I park?", "sessionId": "s2", "stream": True}
    first = post(handlers.chat, "POST /chat", body, "chat-2")
    again = post(handlers.chat, "POST /chat", body, "chat-2")
    assert first[0] == 200
    assert first[1]["Content-Type"] == "text/event-stream"
    assert again == first


def test_openapi_describes_the_header_as_it_is_checked() -> None:
    import yaml

    from pai_core.config import REPO_ROOT
    from pai_core.idempotency import KEY_PATTERN

    spec = yaml.safe_load((REPO_ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    parameter = spec["components"]["parameters"]["IdempotencyKey"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("Idempotency-Key", "header", False)
    assert parameter["schema"]["pattern"].lower() == f"^{KEY_PATTERN}$".lower()
    for path in ("/memory", "/chat"):
        operation = spec["paths"][path]["post"]
        assert {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"]
        assert operation["responses"]["409"] == {"$ref": "#/components/responses/IdempotencyConflict"}


def streamed(body: dict[str, Any], key: str) -> tuple[StreamingContext, dict[str, Any]]:
    """A chat through a handler given a response stream, as the local gateway gives one."""
    event = make_event("POST /chat", json.dumps(body))
    event["headers"]["idempotency-key"] = key
    context = StreamingContext()
    result = handlers.chat.handler(event, context)
    return context, result


def test_a_chat_streamed_as_it_came_is_replayed_as_one_stream(
    installed: InMemoryPersistence, fake_container: FakeContainer
) -> None:
    fake_container.chat_model.reply = "one two three"
    body = {"message": "count", "sessionId": "s-live", "stream": True}
    context, _ = streamed(body, "live-1")
    written = [parse_events(text)[0] for text in context.response_stream.writes]
    assert [name for name, _ in written] == ["delta", "delta", "delta", "done"]

    again, replay = streamed(body, "live-1")
    assert again.response_stream.status is None  # answered in one body, not streamed
    assert replay["statusCode"] == 200
    assert replay["headers"]["Content-Type"] == "text/event-stream"
    assert parse_events(replay["body"]) == [("delta", {"text": "one two three"}), written[-1]]
    assert len(fake_container.chat_model.prompts) == 1
    assert "three" not in installed.stored_text()


def test_a_stream_that_broke_is_not_kept(installed: InMemoryPersistence, fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "one two three"
    fake_container.chat_model.fail_after_deltas = 2
    body = {"message": "count", "sessionId": "s-broken", "stream": True}
    broken, _ = streamed(body, "live-2")
    assert [parse_events(text)[0][0] for text in broken.response_stream.writes][-1] == "error"
    assert installed.items == {}

    fake_container.chat_model.fail_after_deltas = None
    retried, _ = streamed(body, "live-2")
    assert [parse_events(text)[0][0] for text in retried.response_stream.writes][-1] == "done"
    assert len(fake_container.chat_model.prompts) == 2
