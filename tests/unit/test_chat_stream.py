from __future__ import annotations

import json

import handlers.chat
from pai_core.errors import UpstreamInvalidResponse
from tests.fakes import FakeContainer, FakeLambdaContext, as_user


def event(body: dict[str, object]) -> dict[str, object]:
    return as_user(
        {
            "version": "2.0",
            "routeKey": "POST /chat",
            "rawPath": "/chat",
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {
                "http": {"method": "POST", "path": "/chat", "sourceIp": "127.0.0.1"},
                "stage": "$default",
            },
            "body": json.dumps(body),
            "isBase64Encoded": False,
        }
    )


def parse_events(body: str) -> list[tuple[str, dict[str, object]]]:
    parsed = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


def test_stream_true_answers_with_server_sent_events(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "Hello from the stream"
    response = handlers.chat.handler(event({"message": "hi", "stream": True, "sessionId": "s-1"}), FakeLambdaContext())
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/event-stream"
    events = parse_events(response["body"])
    assert {name for name, _ in events[:-1]} == {"delta"}
    assert events[-1][0] == "done"
    assert "".join(str(data["text"]) for _, data in events[:-1]) == "Hello from the stream"
    done = events[-1][1]
    assert done["reply"] == "Hello from the stream"
    assert done["sessionId"] == "s-1"
    assert set(done) == {"sessionId", "reply", "sources", "model", "usage", "learning"}


def test_stream_errors_are_plain_json_errors(fake_container: FakeContainer) -> None:
    response = handlers.chat.handler(event({"message": "", "stream": True}), FakeLambdaContext())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_request"


def test_an_unusable_model_answer_is_a_502(fake_container: FakeContainer) -> None:
    fake_container.chat_model.fail_with = UpstreamInvalidResponse("the model refused the request")
    response = handlers.chat.handler(event({"message": "hi"}), FakeLambdaContext())
    assert response["statusCode"] == 502
    assert json.loads(response["body"])["error"]["code"] == "bad_gateway"


class RecordingStream:
    """What the local gateway hands a handler as context.response_stream."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.writes: list[str] = []

    def start(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers

    def write(self, text: str) -> None:
        assert self.status is not None, "write before start"
        self.writes.append(text)


class StreamingContext(FakeLambdaContext):
    def __init__(self) -> None:
        self.response_stream = RecordingStream()


def test_with_a_response_stream_events_are_written_as_they_come(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "one two three"
    context = StreamingContext()
    handlers.chat.handler(event({"message": "count", "stream": True, "sessionId": "s-2"}), context)
    sink = context.response_stream
    assert sink.status == 200 and sink.headers["Content-Type"] == "text/event-stream"
    assert len(sink.writes) == 4  # three deltas, one done: each written on its own
    names = [parse_events(w)[0][0] for w in sink.writes]
    assert names == ["delta", "delta", "delta", "done"]
    turns = fake_container.conversations.turns[("local", "s-2")]
    assert [(t.role, t.content) for t in turns] == [("user", "count"), ("assistant", "one two three")]


def test_a_stream_that_breaks_ends_with_an_error_event_and_stores_no_reply(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "one two three"
    fake_container.chat_model.fail_after_deltas = 2
    context = StreamingContext()
    handlers.chat.handler(event({"message": "count", "stream": True, "sessionId": "s-3"}), context)
    events = [parse_events(w)[0] for w in context.response_stream.writes]
    assert [name for name, _ in events] == ["delta", "delta", "error"]
    assert events[-1][1] == {"error": {"code": "service_unavailable", "message": "the model's stream broke"}}
    turns = fake_container.conversations.turns[("local", "s-3")]
    assert [t.role for t in turns] == ["user"]


def test_a_bad_streamed_request_is_a_plain_error_before_any_event(fake_container: FakeContainer) -> None:
    context = StreamingContext()
    response = handlers.chat.handler(event({"message": "x", "stream": True, "topK": 99}), context)
    assert response["statusCode"] == 400
    assert context.response_stream.status is None


def test_buffered_stream_failure_is_a_json_error_status(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "one two three"
    fake_container.chat_model.fail_after_deltas = 1
    response = handlers.chat.handler(event({"message": "x", "stream": True}), FakeLambdaContext())
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "service_unavailable"


def test_an_empty_reply_is_a_502_and_is_not_stored(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "   "
    response = handlers.chat.handler(event({"message": "x", "sessionId": "s-4"}), FakeLambdaContext())
    assert response["statusCode"] == 502
    assert [t.role for t in fake_container.conversations.turns[("local", "s-4")]] == ["user"]
