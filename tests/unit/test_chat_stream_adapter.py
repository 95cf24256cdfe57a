"""The streamed chat's HTTP adapter (handlers/chat_stream_server.py) without a socket: requests fed
to ChatStreamApp.handle with the shipped chat handler and the shipped API key authorizer in front of
a composition root of fakes, the answer read from a recording sink."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import handlers.authorizer
import handlers.chat
from handlers.chat_stream_server import (
    AFTER_RESTORE_PATH,
    BEFORE_SNAPSHOT_PATH,
    ChatStreamApp,
    CorsPolicy,
    HttpRequest,
    StreamLambdaContext,
)
from pai_core.auth import ApiKeys, KnownKeys
from pai_core.bootstrap import set_container
from pai_core.errors import UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta
from tests.fakes import FakeContainer, ScriptedChatModel


class Log:
    """One ordered record of what the model produced and what reached the client."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] = []


class RecordingSink:
    def __init__(self, log: Log) -> None:
        self.log = log

    def start(self, status: int, headers: dict[str, str]) -> None:
        assert not any(kind == "start" for kind, _ in self.log.entries), "started twice"
        self.log.entries.append(("start", (status, dict(headers))))

    def write(self, text: str) -> None:
        assert any(kind == "start" for kind, _ in self.log.entries), "write before start"
        self.log.entries.append(("write", text))

    @property
    def status(self) -> int:
        return int(next(value[0] for kind, value in self.log.entries if kind == "start"))

    @property
    def headers(self) -> dict[str, str]:
        return dict(next(value[1] for kind, value in self.log.entries if kind == "start"))

    @property
    def body(self) -> str:
        return "".join(str(value) for kind, value in self.log.entries if kind == "write")

    def json(self) -> Any:
        return json.loads(self.body)


class LoggingChatModel(ScriptedChatModel):
    """Notes each piece in the shared log as it produces it."""

    def __init__(self, log: Log, reply: str) -> None:
        super().__init__(reply)
        self.log = log

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        for item in super().stream(messages, max_tokens=max_tokens):
            if isinstance(item, TextDelta):
                self.log.entries.append(("produced", item.text))
            yield item


class CountingAuthorizer:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.calls += 1
        return handlers.authorizer.handler(event, context)


def request(
    body: object = None,
    *,
    key: str | None = None,
    method: str = "POST",
    path: str = "/chat",
    headers: Sequence[tuple[str, str]] = (),
    raw: bytes | None = None,
) -> HttpRequest:
    listed = [("Content-Type", "application/json"), *headers]
    if key is not None:
        listed.append(("Authorization", f"Bearer {key}"))
    data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
    return HttpRequest(method, path, listed, data, "203.0.113.9")


def app(authorizer: CountingAuthorizer | None = None, **kwargs: Any) -> ChatStreamApp:
    return ChatStreamApp(
        chat_handler=handlers.chat.handler,
        authorizer_handler=authorizer or CountingAuthorizer(),
        **kwargs,
    )


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def issued_key(container: FakeContainer) -> str:
    return container.api_keys.issue(container.settings.owner, "adapter test").key


def test_events_are_written_as_the_model_produces_them_status_and_headers_first() -> None:
    log = Log()
    container = FakeContainer(chat_model=LoggingChatModel(log, "one two three"))
    set_container(container)  # type: ignore[arg-type]
    try:
        sink = RecordingSink(log)
        body = {"message": "count", "stream": True, "useMemory": False}
        app().handle(request(body, key=issued_key(container)), sink)
    finally:
        set_container(None)

    kinds = [kind for kind, _ in log.entries]
    assert sink.status == 200 and sink.headers["Content-Type"] == "text/event-stream"
    # Each piece reaches the client before the model produces the next one.
    assert kinds == ["start", "produced", "write", "produced", "write", "produced", "write", "write"]
    events = [sse(str(value))[0] for kind, value in log.entries if kind == "write"]
    assert [name for name, _ in events] == ["delta", "delta", "delta", "done"]
    assert events[-1][1]["reply"] == "one two three"


def test_a_stream_that_breaks_ends_with_an_error_event(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "one two three"
    fake_container.chat_model.fail_after_deltas = 2
    sink = RecordingSink(Log())
    app().handle(
        request({"message": "count", "stream": True, "useMemory": False}, key=issued_key(fake_container)), sink
    )
    assert sink.status == 200
    events = sse(sink.body)
    assert [name for name, _ in events] == ["delta", "delta", "error"]
    assert events[-1][1] == {"error": {"code": "service_unavailable", "message": "the model's stream broke"}}


def test_a_plain_chat_is_one_json_answer(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "Hello."
    sink = RecordingSink(Log())
    app().handle(request({"message": "hi", "useMemory": False}, key=issued_key(fake_container)), sink)
    assert sink.status == 200 and sink.headers["Content-Type"] == "application/json"
    assert sink.json()["reply"] == "Hello."


def test_without_a_key_the_answer_is_a_401_before_anything_streams(fake_container: FakeContainer) -> None:
    authorizer = CountingAuthorizer()
    sink = RecordingSink(Log())
    app(authorizer).handle(request({"message": "hi", "stream": True}), sink)
    assert sink.status == 401
    assert sink.headers["Content-Type"] == "application/json"
    assert sink.json()["error"]["code"] == "unauthorized"
    assert authorizer.calls == 0  # as API Gateway: no identity source, no authorizer call
    assert fake_container.chat_model.prompts == []


def test_an_unknown_or_malformed_key_is_a_401_json(fake_container: FakeContainer) -> None:
    for key in ("pai_0123456789abcdef_notthesecretatall0000000000000000000", "nonsense"):
        sink = RecordingSink(Log())
        app().handle(request({"message": "hi", "stream": True}, key=key), sink)
        assert sink.status == 401, key
        assert sink.json()["error"]["code"] == "unauthorized"
    assert fake_container.chat_model.prompts == []


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_every_request_asks_the_authorizer_and_a_revoked_key_stops_within_its_cache_time(
    fake_container: FakeContainer,
) -> None:
    ticks = Ticks()
    fake_container.api_keys = ApiKeys(
        fake_container.api_key_store, fake_container.clock, known=KnownKeys(max_age_seconds=60, clock=ticks)
    )
    authorizer = CountingAuthorizer()
    served = app(authorizer)
    issued = fake_container.api_keys.issue(fake_container.settings.owner, "revoked later")
    body = {"message": "hi", "useMemory": False}
    for _ in range(2):
        sink = RecordingSink(Log())
        served.handle(request(body, key=issued.key), sink)
        assert sink.status == 200
    assert authorizer.calls == 2  # as API Gateway with its TTL of 0
    assert fake_container.api_key_store.reads == 1  # the authorizer's own cache answered the second
    fake_container.api_keys.revoke(issued.info.key_id)
    ticks.now += 59.9
    sink = RecordingSink(Log())
    served.handle(request(body, key=issued.key), sink)
    assert sink.status == 200  # still known good to the authorizer, as through the API
    ticks.now += 0.1
    sink = RecordingSink(Log())
    served.handle(request(body, key=issued.key), sink)
    assert sink.status == 401


def test_keys_that_cannot_be_checked_now_are_not_remembered_as_bad(fake_container: FakeContainer) -> None:
    authorizer = CountingAuthorizer()
    served = app(authorizer)
    key = issued_key(fake_container)
    fake_container.api_key_store.fail_with = UpstreamUnavailable("DynamoDB cannot be reached")
    sink = RecordingSink(Log())
    served.handle(request({"message": "hi", "useMemory": False}, key=key), sink)
    assert sink.status == 503
    fake_container.api_key_store.fail_with = None
    sink = RecordingSink(Log())
    served.handle(request({"message": "hi", "useMemory": False}, key=key), sink)
    assert sink.status == 200
    assert authorizer.calls == 2


def test_an_authorizer_that_fails_is_a_500_with_the_fixed_body(fake_container: FakeContainer) -> None:
    def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    sink = RecordingSink(Log())
    ChatStreamApp(chat_handler=handlers.chat.handler, authorizer_handler=broken).handle(
        request({"message": "hi"}, key="pai_x"), sink
    )
    assert sink.status == 500
    assert sink.json() == {"error": {"code": "internal_error", "message": "Something went wrong on our side."}}
    assert "boom" not in sink.body


def test_a_body_that_is_not_json_is_a_400(fake_container: FakeContainer) -> None:
    sink = RecordingSink(Log())
    app().handle(request(key=issued_key(fake_container), raw=b"{not json"), sink)
    assert sink.status == 400
    assert sink.json()["error"]["code"] == "invalid_json"


def test_a_body_over_the_limit_is_a_413(fake_container: FakeContainer) -> None:
    sink = RecordingSink(Log())
    app().handle(request({"message": "x" * (300 * 1024)}, key=issued_key(fake_container)), sink)
    assert sink.status == 413
    assert sink.json()["error"]["code"] == "payload_too_large"
    assert fake_container.chat_model.prompts == []


def test_anything_but_post_chat_is_a_404_json(fake_container: FakeContainer) -> None:
    key = issued_key(fake_container)
    for method, path in (("POST", "/memory"), ("GET", "/chat"), ("POST", "/chat/x"), ("GET", "/"), ("DELETE", "/chat")):
        sink = RecordingSink(Log())
        app().handle(request({"message": "hi"}, key=key, method=method, path=path), sink)
        assert sink.status == 404, (method, path)
        assert sink.json() == {"error": {"code": "route_not_found", "message": "no such route"}}
    assert fake_container.chat_model.prompts == []


def test_a_preflight_is_answered_without_the_handler(fake_container: FakeContainer) -> None:
    sink = RecordingSink(Log())
    app().handle(request(method="OPTIONS"), sink)
    assert sink.status == 204 and sink.body == ""


def test_the_handler_sees_api_gateways_event_without_the_web_adapters_headers(fake_container: FakeContainer) -> None:
    seen: list[dict[str, Any]] = []

    def chat(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    forwarded = json.dumps({"http": {"sourceIp": "198.51.100.7"}})
    lambda_context = json.dumps({"request_id": "abc", "deadline": int(time.time() * 1000) + 5000})
    headers = [("x-amzn-request-context", forwarded), ("x-amzn-lambda-context", lambda_context)]
    key = issued_key(fake_container)
    served = ChatStreamApp(chat_handler=chat, authorizer_handler=handlers.authorizer.handler)
    sink = RecordingSink(Log())
    served.handle(request({"message": "hi"}, key=key, headers=headers), sink)
    (event,) = seen
    assert event["routeKey"] == "POST /chat" and event["version"] == "2.0"
    assert event["requestContext"]["http"]["sourceIp"] == "198.51.100.7"
    assert event["requestContext"]["authorizer"]["lambda"]["userId"] == fake_container.settings.owner
    assert not any(name.startswith("x-amzn-") for name in event["headers"])
    assert json.loads(event["body"]) == {"message": "hi"}


def test_the_forwarded_deadline_is_never_later_than_the_functions_timeout() -> None:
    far = json.dumps({"deadline": int(time.time() * 1000) + 3_600_000, "request_id": "r-1"})
    context = StreamLambdaContext.forwarded(far, function_name="f", timeout_seconds=30, stream=None)
    assert context.get_remaining_time_in_millis() <= 30_000
    assert context.aws_request_id == "r-1"
    near = json.dumps({"deadline": int(time.time() * 1000) + 2_000})
    assert (
        StreamLambdaContext.forwarded(
            near, function_name="f", timeout_seconds=30, stream=None
        ).get_remaining_time_in_millis()
        <= 2_000
    )
    for junk in ("[1]", "not json", None, json.dumps({"deadline": "soon", "env_config": 3})):
        assert (
            StreamLambdaContext.forwarded(junk, function_name="f", timeout_seconds=30, stream=None).function_name == "f"
        )


def test_snapstart_hooks_run_only_for_the_web_adapter_itself(fake_container: FakeContainer) -> None:
    calls: list[str] = []
    served = app(snapstart_hooks=(lambda: calls.append("before"), lambda: calls.append("after")))
    via_url = [("x-amzn-request-context", "{}")]
    for path in (BEFORE_SNAPSHOT_PATH, AFTER_RESTORE_PATH):
        sink = RecordingSink(Log())
        served.handle(request(method="POST", path=path, headers=via_url), sink)
        assert sink.status == 404
    assert calls == []
    for path in (BEFORE_SNAPSHOT_PATH, AFTER_RESTORE_PATH):
        sink = RecordingSink(Log())
        served.handle(request(method="POST", path=path), sink)
        assert sink.status == 200
    assert calls == ["before", "after"]
    sink = RecordingSink(Log())
    app().handle(request(method="POST", path=BEFORE_SNAPSHOT_PATH), sink)  # no hooks: no such route
    assert sink.status == 404


def test_cors_headers_only_for_allowed_origins() -> None:
    cors = CorsPolicy(allow_origins=("http://127.0.0.1:8080",), allow_headers=("authorization", "content-type"))
    assert cors.headers_for("https://evil.example", preflight=True) == {}
    assert cors.headers_for(None, preflight=False) == {}
    simple = cors.headers_for("http://127.0.0.1:8080", preflight=False)
    assert simple == {"Access-Control-Allow-Origin": "http://127.0.0.1:8080", "Vary": "Origin"}
    preflight = cors.headers_for("http://127.0.0.1:8080", preflight=True)
    assert preflight["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert preflight["Access-Control-Allow-Methods"] == "POST"
