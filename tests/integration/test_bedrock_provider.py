"""The Bedrock provider against a local server speaking Converse's wire format (no emulator
implements Converse), with boto3 pointed at it by endpoint_url: real HTTP, real botocore."""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.exceptions import ReadTimeoutError

from pai_core.adapters.llm_bedrock import BedrockChatModel, converse_messages
from pai_core.bootstrap import Container
from pai_core.errors import UpstreamInvalidResponse, UpstreamUnavailable
from pai_core.models import ChatMessage
from pai_local.stack import RunningStack

pytestmark = pytest.mark.integration
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
Reply = tuple[int, dict[str, str], bytes]


def converse_reply(text: str, *, input_tokens: int = 42, output_tokens: int = 7) -> Reply:
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": 12},
    }
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def aws_error(status: int, code: str) -> Reply:
    return (
        status,
        {"content-type": "application/json", "x-amzn-errortype": code},
        json.dumps({"message": code}).encode(),
    )


@dataclass
class FakeConverse:
    """Answers each request with the next scripted reply (the last one repeats); records requests."""

    replies: list[Reply | Callable[[], Reply]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    def next_reply(self) -> Reply:
        scripted = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return scripted() if callable(scripted) else scripted


@pytest.fixture
def converse() -> Iterator[FakeConverse]:
    fake = FakeConverse()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            fake.requests.append((unquote(self.path), body))
            status, headers, payload = fake.next_reply()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError):  # the client gave up waiting (the timeout test)
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def bedrock_container(stack: RunningStack, converse: FakeConverse, **settings: Any) -> Container:
    return Container(
        replace(
            stack.settings, llm_provider="bedrock", llm_endpoint_url=converse.url, bedrock_model_id=MODEL_ID, **settings
        )
    )


def test_chat_through_bedrock_sends_what_converse_expects(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [converse_reply("Hello, Zorblax."), converse_reply("Your name is Zorblax.", input_tokens=80)]
    container = bedrock_container(stack, converse)
    first = container.chat.chat(
        stack.settings.owner, message="My name is Zorblax", session_id=None, use_memory=False, top_k=0
    )
    second = container.chat.chat(
        stack.settings.owner, message="What is my name?", session_id=first.session_id, use_memory=False, top_k=0
    )
    assert (second.reply, second.model) == ("Your name is Zorblax.", MODEL_ID)
    assert (second.usage.input_tokens, second.usage.output_tokens) == (80, 7)

    path, body = converse.requests[-1]
    assert path == f"/model/{MODEL_ID}/converse"
    assert body["inferenceConfig"]["maxTokens"] == stack.settings.llm_max_output_tokens
    assert body["system"][0]["text"].startswith("You are PAI")
    assert [(m["role"], m["content"][0]["text"]) for m in body["messages"]] == [
        ("user", "My name is Zorblax"),
        ("assistant", "Hello, Zorblax."),
        ("user", "What is my name?"),
    ]


def test_throttling_is_retried_then_a_503(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [aws_error(429, "ThrottlingException")]
    container = bedrock_container(stack, converse, llm_max_attempts=2)
    with pytest.raises(UpstreamUnavailable) as raised:
        container.chat_model.complete([ChatMessage(role="user", content="hi")], max_tokens=16)
    assert len(converse.requests) == 2  # bounded: exactly llm_max_attempts tries
    assert raised.value.retry_after_seconds >= 1


def test_a_throttled_then_good_answer_succeeds(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [aws_error(429, "ThrottlingException"), converse_reply("ok")]
    container = bedrock_container(stack, converse, llm_max_attempts=2)
    assert container.chat_model.complete([ChatMessage(role="user", content="hi")], max_tokens=16).text == "ok"


def test_validation_error_is_a_bad_gateway(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [aws_error(400, "ValidationException")]
    with pytest.raises(UpstreamInvalidResponse):
        bedrock_container(stack, converse).chat_model.complete([ChatMessage(role="user", content="hi")], max_tokens=16)
    assert len(converse.requests) == 1  # not retried: it would fail the same way


def test_garbage_is_a_bad_gateway(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [(200, {"content-type": "application/json"}, b'{"output": {"nothing": 1}}')]
    with pytest.raises(UpstreamInvalidResponse):
        bedrock_container(stack, converse).chat_model.complete([ChatMessage(role="user", content="hi")], max_tokens=16)


def test_a_hanging_provider_times_out_by_itself(stack: RunningStack, converse: FakeConverse) -> None:
    """The provider holds its answer back until the client has given up: the client must end the
    call on its own read timeout, once (llm_max_attempts=1), before any answer exists. Checked by
    the order of events, not by a stopwatch: had the client waited for the answer, it would have
    got "too late" and returned normally."""
    client_gave_up = threading.Event()
    answered = threading.Event()

    def held_back() -> Reply:
        # The bound is a safety net for a broken client; the test releases the answer itself.
        client_gave_up.wait(timeout=60)
        answered.set()
        return converse_reply("too late")

    converse.replies = [held_back]
    container = bedrock_container(stack, converse, llm_timeout_seconds=1, llm_max_attempts=1)
    try:
        with pytest.raises(UpstreamUnavailable) as raised:
            container.chat_model.complete([ChatMessage(role="user", content="hi")], max_tokens=16)
        assert not answered.is_set(), "the client waited for the provider's answer instead of timing out"
    finally:
        client_gave_up.set()
    assert isinstance(raised.value.__cause__, ReadTimeoutError), repr(raised.value.__cause__)
    assert len(converse.requests) == 1  # exactly llm_max_attempts tries, no retry after the timeout


def test_a_failed_turn_is_merged_so_roles_alternate() -> None:
    messages = [
        ChatMessage(role="system", content="sys"),
        ChatMessage(role="assistant", content="orphan"),
        ChatMessage(role="user", content="first try"),
        ChatMessage(role="user", content="again"),
    ]
    assert converse_messages(messages) == [{"role": "user", "content": [{"text": "first try\n\nagain"}]}]


def test_token_estimate_is_generous() -> None:
    model = BedrockChatModel(None, MODEL_ID, context_tokens=1000)  # type: ignore[arg-type]
    assert model.count_tokens("word " * 100) >= 125  # ~100-125 real tokens


# -- ConverseStream: the AWS event-stream encoding -----------------------------------------------


def event_message(headers: dict[str, str], payload: dict[str, Any]) -> bytes:
    """One message of the AWS event-stream encoding (application/vnd.amazon.eventstream)."""
    encoded_headers = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        for name, value in headers.items()
    )
    body = json.dumps(payload).encode()
    total = 12 + len(encoded_headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded_headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def stream_event(kind: str, payload: dict[str, Any]) -> bytes:
    return event_message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, payload)


def stream_reply(pieces: list[str], *, fail_with: str | None = None) -> Reply:
    body = stream_event("messageStart", {"role": "assistant"})
    for piece in pieces:
        body += stream_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
    if fail_with is not None:
        body += event_message(
            {":exception-type": fail_with, ":content-type": "application/json", ":message-type": "exception"},
            {"message": "the model stream broke"},
        )
    else:
        body += stream_event("contentBlockStop", {"contentBlockIndex": 0})
        body += stream_event("messageStop", {"stopReason": "end_turn"})
        body += stream_event(
            "metadata",
            {
                "usage": {"inputTokens": 31, "outputTokens": len(pieces), "totalTokens": 31 + len(pieces)},
                "metrics": {"latencyMs": 20},
            },
        )
    return 200, {"content-type": "application/vnd.amazon.eventstream"}, body


def test_converse_stream_yields_pieces_then_the_completion(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [stream_reply(["Hel", "lo, ", "Zorblax."])]
    items = list(
        bedrock_container(stack, converse).chat_model.stream([ChatMessage(role="user", content="hi")], max_tokens=32)
    )
    assert [item.text for item in items[:-1]] == ["Hel", "lo, ", "Zorblax."]  # type: ignore[union-attr]
    final = items[-1]
    assert final.text == "Hello, Zorblax."  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (31, 3)  # type: ignore[union-attr]
    path, body = converse.requests[-1]
    assert path == f"/model/{MODEL_ID}/converse-stream"
    assert body["inferenceConfig"]["maxTokens"] == 32


def test_an_exception_mid_stream_stores_no_reply(stack: RunningStack, converse: FakeConverse) -> None:
    converse.replies = [stream_reply(["Once ", "upon "], fail_with="modelStreamErrorException")]
    container = bedrock_container(stack, converse)
    session = f"bedrock-breaks-{time.time_ns()}"
    stream = container.chat.chat_stream(
        stack.settings.owner, message="A story?", session_id=session, use_memory=False, top_k=0
    )
    received = []
    with pytest.raises(UpstreamUnavailable):
        for item in stream:
            received.append(item)
    assert len(received) == 2
    turns = container.chat._conversations.recent(stack.settings.owner, session, now=datetime.now(UTC), limit=10)  # type: ignore[attr-defined]
    assert [turn.role for turn in turns] == ["user"]
