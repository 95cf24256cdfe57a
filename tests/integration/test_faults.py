"""Dependencies failing under the local stack: faults injected into the real boto3 clients of a
composition root serving the gateway (at botocore's `before-send`, after it has built and signed
each attempt), then storage read back with clean clients.

What must hold: a failing write is a 503 with Retry-After and leaves nothing behind; a write whose
answer was lost after it landed (botocore then resends it) is stored once, neither refused nor
duplicated; a failure after the write (the change stamp) loses nothing; a KMS or S3 outage is a 503
or, where a fallback exists (index snapshots), not an error at all.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

from pai_core.adapters.dynamodb_changelog import CHANGES_SUFFIX, HEAD_ID
from pai_core.bootstrap import Container
from pai_core.config import Settings
from pai_core.ports import ChatModel
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient, HttpResult

pytestmark = pytest.mark.integration

# (request) -> a response to answer with instead of sending, or None to send it as usual
Fault = Callable[[AWSPreparedRequest], AWSResponse | None]


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


def internal_error(protocol: str = "json") -> Fault:
    def answer(request: AWSPreparedRequest) -> AWSResponse:
        if protocol == "json":
            body = json.dumps({"__type": "InternalServerError", "message": "injected"}).encode()
            headers = {"content-type": "application/x-amz-json-1.0"}
        else:
            body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            headers = {"content-type": "application/xml"}
        return AWSResponse(request.url, 500, headers, _Body(body))

    return answer


def answer_lost_once() -> Fault:
    """The first attempt reaches the emulator and lands; its answer never comes back (a read
    timeout). Later attempts go through untouched."""
    state = {"lost": False}

    def answer(request: AWSPreparedRequest) -> AWSResponse | None:
        if state["lost"]:
            return None
        state["lost"] = True
        URLLib3Session().send(request)  # delivered...
        raise ReadTimeoutError(endpoint_url=request.url)  # ...but the caller never hears back

    return answer


def on_table(table: str, fault: Fault) -> Fault:
    """Only requests to `table` (DynamoDB's JSON names it); others pass."""

    def answer(request: AWSPreparedRequest) -> AWSResponse | None:
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        return fault(request) if json.loads(body or b"{}").get("TableName") == table else None

    return answer


class FaultyContainer(Container):
    """The stack's composition root, with faults on the clients it builds: {event: fault}, for
    events such as "before-send.dynamodb.PutItem"."""

    def __init__(self, settings: Settings, faults: dict[str, Fault], *, chat_model: ChatModel | None = None) -> None:
        super().__init__(settings, chat_model=chat_model)
        self.faults = faults
        self.faulted: list[str] = []

    def client(self, service: str) -> Any:
        client = super().client(service)
        for event, fault in self.faults.items():
            client.meta.events.register(event, self._recording(event, fault))
        return client

    def _recording(self, event: str, fault: Fault) -> Callable[..., AWSResponse | None]:
        def handler(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
            answer = fault(request)
            if answer is not None:  # answered instead of the service (a fault that raises is not counted)
                self.faulted.append(event)
            return answer

        return handler


@pytest.fixture
def serve_with_faults(
    stack: RunningStack, installed: Callable[[Container], None]
) -> Callable[[dict[str, Fault]], FaultyContainer]:
    def serve(faults: dict[str, Fault]) -> FaultyContainer:
        container = FaultyContainer(stack.settings, faults, chat_model=stack.container.chat_model)
        installed(container)
        return container

    return serve


def new_user(stack: RunningStack, api: ApiClient) -> tuple[str, ApiClient]:
    user = f"fault-{secrets.token_hex(4)}"
    return user, api.with_key(stack.container.api_keys.issue(user, "test_faults").key)


def memory_items(aws: Callable[[str], Any], stack: RunningStack, owner: str) -> list[dict[str, Any]]:
    response = aws("dynamodb").query(
        TableName=stack.settings.knowledge_table,
        KeyConditionExpression="#owner = :owner",
        ExpressionAttributeNames={"#owner": "owner"},
        ExpressionAttributeValues={":owner": {"S": owner}},
        ConsistentRead=True,
    )
    items: list[dict[str, Any]] = response["Items"]
    return items


def assert_unavailable(result: HttpResult) -> None:
    assert result.status == 503, result
    assert int(result.headers["retry-after"]) >= 1
    assert result.json["error"]["code"] == "service_unavailable"


def store(client: ApiClient, content: str) -> HttpResult:
    return client.post("/memory", {"action": "store", "content": content, "category": "faults"})


def test_a_store_the_table_refuses_is_a_503_and_leaves_nothing(
    stack: RunningStack,
    api: ApiClient,
    aws: Callable[[str], Any],
    installed: Callable[[Container], None],
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    user, client = new_user(stack, api)
    knowledge = stack.settings.knowledge_table
    container = serve_with_faults({"before-send.dynamodb.PutItem": on_table(knowledge, internal_error())})
    assert_unavailable(store(client, "a memory that never lands"))
    assert container.faulted.count("before-send.dynamodb.PutItem") == 3  # every attempt, then gave up

    assert memory_items(aws, stack, user) == []
    stamp = aws("dynamodb").get_item(
        TableName=knowledge, Key={"owner": {"S": user + CHANGES_SUFFIX}, "id": {"S": HEAD_ID}}, ConsistentRead=True
    )
    assert "Item" not in stamp  # nothing announced a change that did not happen
    installed(stack.container)
    assert client.post("/memory", {"action": "list"}).json["items"] == []
    assert client.post("/search", {"query": "a memory that never lands"}).json["results"] == []


def test_a_store_whose_answer_was_lost_is_stored_exactly_once(
    stack: RunningStack,
    api: ApiClient,
    aws: Callable[[str], Any],
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    user, client = new_user(stack, api)
    serve_with_faults({"before-send.dynamodb.PutItem": on_table(stack.settings.knowledge_table, answer_lost_once())})
    stored = store(client, "my bicycle is green")
    assert stored.status == 201, stored  # not a 409 for finding its own first attempt
    (item,) = memory_items(aws, stack, user)
    assert item["id"]["S"] == stored.json["id"]
    assert [m["id"] for m in client.post("/memory", {"action": "list"}).json["items"]] == [stored.json["id"]]
    assert [hit["id"] for hit in client.post("/search", {"query": "bicycle colour"}).json["results"]] == [
        stored.json["id"]
    ]


def test_a_change_stamp_that_fails_after_the_store_loses_nothing(
    stack: RunningStack,
    api: ApiClient,
    aws: Callable[[str], Any],
    installed: Callable[[Container], None],
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    user, client = new_user(stack, api)
    knowledge = stack.settings.knowledge_table
    container = serve_with_faults({"before-send.dynamodb.UpdateItem": on_table(knowledge, internal_error())})
    stored = store(client, "the spare key is under the blue pot")
    assert stored.status == 201, stored
    assert container.faulted.count("before-send.dynamodb.UpdateItem") == 3
    assert len(memory_items(aws, stack, user)) == 1
    assert client.post("/memory", {"action": "retrieve", "id": stored.json["id"]}).status == 200
    # A container that never saw the store (a cold one) finds it by reading the table.
    installed(Container(stack.settings, chat_model=stack.container.chat_model))
    hits = client.post("/search", {"query": "where is the spare key"}).json["results"]
    assert [hit["id"] for hit in hits] == [stored.json["id"]]


def test_a_chat_turn_whose_answer_was_lost_is_stored_once(
    stack: RunningStack,
    api: ApiClient,
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    user, client = new_user(stack, api)
    conversations_table = stack.settings.conversations_table
    container = serve_with_faults({"before-send.dynamodb.PutItem": on_table(conversations_table, answer_lost_once())})
    session = f"faults-{secrets.token_hex(4)}"
    reply = client.post("/chat", {"message": "Hello there.", "sessionId": session, "useMemory": False})
    assert reply.status == 200, reply
    turns = container.conversation_repository.recent(user, session, now=container.clock.now(), limit=10)
    assert [(turn.role, turn.content) for turn in turns][:1] == [("user", "Hello there.")]
    assert [turn.role for turn in turns] == ["user", "assistant"]


def test_kms_unavailable_for_a_new_users_first_store_is_a_503_and_leaves_nothing(
    stack: RunningStack,
    api: ApiClient,
    aws: Callable[[str], Any],
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    """A new user's first write makes their branch key, which KMS wraps: with KMS failing, neither
    the key nor the memory is written."""
    user, client = new_user(stack, api)
    serve_with_faults({"before-send.kms": internal_error()})
    assert_unavailable(store(client, "written only once KMS is back"))
    assert memory_items(aws, stack, user) == []
    keys = aws("dynamodb").query(
        TableName=stack.settings.keystore_table,
        KeyConditionExpression="#owner = :owner",
        ExpressionAttributeNames={"#owner": "owner"},
        ExpressionAttributeValues={":owner": {"S": user}},
        ConsistentRead=True,
    )
    assert keys["Items"] == []


def test_unreadable_index_snapshots_are_not_an_error(
    stack: RunningStack,
    api: ApiClient,
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    """A cold search container reads the owner's index snapshot from S3 first; when S3 fails, it
    builds the index from the table instead of failing the search."""
    _, client = new_user(stack, api)
    stored = store(client, "the boat is moored at pier seven")
    assert stored.status == 201, stored
    container = serve_with_faults({"before-send.s3.GetObject": internal_error("rest-xml")})
    hits = client.post("/search", {"query": "where is the boat moored"})
    assert hits.status == 200, hits
    assert [hit["id"] for hit in hits.json["results"]] == [stored.json["id"]]
    assert "before-send.s3.GetObject" in container.faulted


def test_an_unreadable_key_store_is_a_503_that_the_next_request_does_not_inherit(
    stack: RunningStack,
    api: ApiClient,
    serve_with_faults: Callable[[dict[str, Fault]], FaultyContainer],
) -> None:
    """Issue 16, part 3: the "unavailable" answer is never cached, by the gateway (TTL 0, as the
    template's authorizer) nor by the authorizer, so the first request after the outage gets in."""
    _, client = new_user(stack, api)
    down = {"on": True}
    broken = internal_error()

    def keys_table(request: AWSPreparedRequest) -> AWSResponse | None:
        return broken(request) if down["on"] else None

    container = serve_with_faults({"before-send.dynamodb.GetItem": on_table(stack.settings.api_keys_table, keys_table)})
    assert_unavailable(client.post("/memory", {"action": "list"}))
    assert container.faulted.count("before-send.dynamodb.GetItem") == 3  # botocore's attempts, then 503
    down["on"] = False
    assert client.post("/memory", {"action": "list"}).status == 200  # at once: nothing remembered the 503
    down["on"] = True  # a key checked good is remembered (AuthCacheSeconds): an outage does not refuse it
    assert client.post("/memory", {"action": "list"}).status == 200
    assert container.faulted.count("before-send.dynamodb.GetItem") == 3
