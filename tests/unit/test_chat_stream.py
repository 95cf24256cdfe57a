from __future__ import annotations

import json

import handlers.chat
from pai_core.errors import UpstreamInvalidResponse
from tests.fakes import FakeContainer


class Context:
    function_name = "pai-chat-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:pai-chat-test"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def event(body: dict[str, object]) -> dict[str, object]:
    return {
        "version": "2.0",
        "routeKey": "POST /chat",
        "rawPath": "/chat",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/chat", "sourceIp": "127.0.0.1"}, "stage": "$default"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def parse_events(body: str) -> list[tuple[str, dict[str, object]]]:
    parsed = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


def test_stream_true_answers_with_server_sent_events(fake_container: FakeContainer) -> None:
    fake_container.chat_model.reply = "Hello from the stream"
    response = handlers.chat.handler(event({"message": "hi", "stream": True, "sessionId": "s-1"}), Context())
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/event-stream"
    events = parse_events(response["body"])
    assert [name for name, _ in events] == ["delta", "done"]
    assert events[0][1] == {"text": "Hello from the stream"}
    done = events[-1][1]
    assert done["reply"] == "Hello from the stream"
    assert done["sessionId"] == "s-1"
    assert set(done) == {"sessionId", "reply", "sources", "model", "usage"}


def test_stream_errors_are_plain_json_errors(fake_container: FakeContainer) -> None:
    response = handlers.chat.handler(event({"message": "", "stream": True}), Context())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_request"


def test_an_unusable_model_answer_is_a_502(fake_container: FakeContainer) -> None:
    fake_container.chat_model.fail_with = UpstreamInvalidResponse("the model refused the request")
    response = handlers.chat.handler(event({"message": "hi"}), Context())
    assert response["statusCode"] == 502
    assert json.loads(response["body"])["error"]["code"] == "bad_gateway"
