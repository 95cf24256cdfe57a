"""Every model call is bounded by its timeout, a streamed reply included: the client's timeout is
per read, so a reply that trickles in, or stalls after its first piece, is cut by a total deadline.
The endpoint is an httpx transport in this process (no socket)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest

from pai_core.adapters.llm_local import SAMPLING, LocalServerChatModel
from pai_core.adapters.llm_openai import OpenAiChatModel, StreamDeadlineExceeded, within_deadline
from pai_core.errors import UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta

MESSAGES = [ChatMessage(role="user", content="hi")]


def chunk(text: str) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class ScriptedStream(httpx2.SyncByteStream):
    """The body of a streamed reply: the given pieces, then whatever `after` does."""

    def __init__(self, pieces: list[bytes], after: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.after = after

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        yield from self.after


def model_streaming(body: httpx2.SyncByteStream, *, timeout_seconds: float) -> OpenAiChatModel:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    return OpenAiChatModel(
        base_url="http://llm.test/v1",
        api_key="k",
        model="m",
        context_tokens=2048,
        timeout_seconds=timeout_seconds,
        max_attempts=1,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        token_counter=len,
    )


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """Set at the end of the test, so that a stalled stream's reader thread can finish."""
    event = threading.Event()
    yield event
    event.set()


def test_a_stream_that_stalls_after_its_first_piece_ends_unavailable(released: threading.Event) -> None:
    def stall() -> Iterator[bytes]:
        released.wait()
        yield b"data: [DONE]\n\n"

    model = model_streaming(ScriptedStream([chunk("Hel")], stall()), timeout_seconds=0.3)
    stream = model.stream(MESSAGES, max_tokens=8)
    assert next(stream) == TextDelta("Hel")
    with pytest.raises(UpstreamUnavailable, match="in time"):
        next(stream)


def test_a_stream_that_trickles_on_past_its_timeout_is_cut(released: threading.Event) -> None:
    def trickle() -> Iterator[bytes]:
        while not released.wait(0.05):  # every read returns well within any per-read timeout
            yield chunk(".")

    model = model_streaming(ScriptedStream([], trickle()), timeout_seconds=0.3)
    received = []
    with pytest.raises(StreamDeadlineExceeded):
        received.extend(model.stream(MESSAGES, max_tokens=10_000))
    assert received and all(isinstance(item, TextDelta) for item in received)


def test_a_stream_cut_by_the_server_is_unavailable() -> None:
    def cut() -> Iterator[bytes]:
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
        yield b""  # pragma: no cover (a generator that fails at once)

    model = model_streaming(ScriptedStream([chunk("Hel")], cut()), timeout_seconds=5)
    stream = model.stream(MESSAGES, max_tokens=8)
    assert next(stream) == TextDelta("Hel")
    with pytest.raises(UpstreamUnavailable):
        next(stream)


def test_a_stream_that_ends_in_time_is_whole_with_the_counter_given() -> None:
    body = ScriptedStream([chunk("Hel"), chunk("lo."), b"data: [DONE]\n\n"], iter([]))
    items = list(model_streaming(body, timeout_seconds=5).stream(MESSAGES, max_tokens=8))
    assert items[:2] == [TextDelta("Hel"), TextDelta("lo.")]
    final = items[-1]
    assert isinstance(final, Completion) and final.text == "Hello."
    # No usage reported: counted with the token counter given (here: characters).
    assert (final.usage.input_tokens, final.usage.output_tokens) == (len("hi"), len("Hello."))


class Source:
    def __init__(self, items: list[object], error: Exception | None = None) -> None:
        self.items = items
        self.error = error
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[object]:
        yield from self.items
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed.set()


def test_within_deadline_passes_items_and_errors_through() -> None:
    assert list(within_deadline(Source([1, 2, 3]), deadline=time.monotonic() + 600)) == [1, 2, 3]
    with pytest.raises(ValueError, match="broken"):
        list(within_deadline(Source([1], ValueError("broken")), deadline=time.monotonic() + 600))


def test_within_deadline_past_its_deadline_reads_nothing_more() -> None:
    with pytest.raises(StreamDeadlineExceeded):
        next(within_deadline(Source([1]), deadline=0.0, clock=lambda: 1.0))


def test_a_reader_that_leaves_early_gets_the_stream_closed() -> None:
    source = Source(list(range(1000)))
    reading = within_deadline(source, deadline=time.monotonic() + 600)
    assert next(reading) == 0
    reading.close()
    assert source.closed.wait(5)


def test_the_local_model_asks_for_a_plain_reply_as_a_stream_and_is_bounded_the_same(
    released: threading.Event,
) -> None:
    """So that the server stops writing a reply nobody waits for any more."""
    asked: list[dict[str, object]] = []

    def stall() -> Iterator[bytes]:
        released.wait()
        yield b"data: [DONE]\n\n"

    bodies = iter(
        [
            ScriptedStream([chunk("Hel"), chunk("lo."), b"data: [DONE]\n\n"], iter([])),
            ScriptedStream([chunk("Hel")], stall()),
        ]
    )

    def answer(request: httpx2.Request) -> httpx2.Response:
        asked.append(json.loads(request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=next(bodies))

    model = LocalServerChatModel(
        base_url="http://127.0.0.1:1/v1",
        api_key="no-key",
        model="m",
        context_tokens=2048,
        timeout_seconds=0.3,
        max_attempts=1,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        token_counter=len,
        extra_body=SAMPLING,
    )
    assert model.complete(MESSAGES, max_tokens=8).text == "Hello."
    assert asked[0]["stream"] is True
    assert asked[0]["repeat_penalty"] == SAMPLING["repeat_penalty"]
    with pytest.raises(UpstreamUnavailable, match="in time"):
        model.complete(MESSAGES, max_tokens=8)
