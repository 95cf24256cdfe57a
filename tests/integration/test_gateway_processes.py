"""The local stack in process mode (what `make run` serves): each function runs in worker processes
of its own, one request at a time each, so a slow chat holds up neither /health nor a search; a
worker that dies mid-request, or runs past its function's timeout, costs that request a 503 with
Retry-After, and its replacement serves the next one.

The chat function talks to an OpenAI-compatible stub on loopback that the tests hold and release:
every ordering below is read from events (the stub saw the request, an answer came back), never
from elapsed time. While held, the stub keeps its connection busy with whitespace (or SSE comments
when streaming), so the model client's own read timeout never fires. The chat handler keeps to its
own deadline (it refuses a call it has no time left for), so the timeout test uses a function of
its own that does not (tests/integration/gateway_functions.py), behind a gateway with a short
timeout."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from pai_core.config import Settings
from pai_local.emulator import free_port
from pai_local.functions import FunctionSpec, ProcessFunctions, WorkerPool
from pai_local.gateway import LocalGateway
from pai_local.stack import RunningStack, start_stack
from pai_local.template import Route
from tests.integration.support import REGION, ApiClient, Emulator, HttpResult, new_env

pytestmark = pytest.mark.integration

SHORT_TIMEOUT_SECONDS = 2.0
# Upper bounds on waiting for an event, so that a broken stack fails a test instead of hanging it.
EVENT_WAIT_SECONDS = 120.0
STUB_REPLY = "stub reply"


class LlmStub:
    """Chat completions that answer at once, or, between hold() and release(), only once released."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._arrivals = 0
        self._released = threading.Event()
        self._released.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
        self._server.daemon_threads = True
        self._server.stub = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> threading.Event:
        return self._released

    def arrived(self) -> None:
        with self._changed:
            self._arrivals += 1
            self._changed.notify_all()

    def arrivals(self) -> int:
        with self._changed:
            return self._arrivals

    def wait_for_arrivals(self, count: int) -> None:
        with self._changed:
            seen = self._changed.wait_for(lambda: self._arrivals >= count, timeout=EVENT_WAIT_SECONDS)
        assert seen, f"the model stub saw {self._arrivals} requests, waited for {count}"

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


def _completion_chunk(text: str, *, finish: str | None = None) -> bytes:
    chunk = {
        "id": "stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        stub: LlmStub = self.server.stub  # type: ignore[attr-defined]
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        stub.arrived()
        self.close_connection = True
        streamed = bool(request.get("stream"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if streamed else "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if streamed:
                self._chunk(_completion_chunk("one "))
                self._hold(stub, b": held\n\n")
                self._chunk(_completion_chunk("two", finish="stop"))
                usage = {"id": "stub", "object": "chat.completion.chunk", "created": 0, "model": "stub", "choices": []}
                usage["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                self._chunk(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            else:
                self._hold(stub, b" ")
                reply = {
                    "id": "stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "stub",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": STUB_REPLY}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                }
                self._chunk(json.dumps(reply).encode())
            self._chunk(b"")
        except OSError:  # the worker that asked is gone
            return

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _hold(self, stub: LlmStub, filler: bytes) -> None:
        """Until released, a byte now and then: the client's read timeout sees a live connection."""
        while not stub.released.wait(0.2):
            self._chunk(filler)


@pytest.fixture(scope="module")
def llm_stub() -> Iterator[LlmStub]:
    stub = LlmStub()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture(scope="module")
def process_stack(emulator: Emulator, llm_stub: LlmStub) -> Iterator[RunningStack]:
    settings = Settings(
        env=new_env("gw"),
        region=REGION,
        endpoint_url=emulator.endpoint_url,
        llm_provider="openai",
        openai_base_url=llm_stub.base_url,
        openai_model="stub",
        llm_timeout_seconds=3,
        llm_max_attempts=1,
        rate_limit_per_minute=1_000_000,
        daily_token_budget=10**12,
        local_concurrency=2,
        # These tests count the stub model's callers; learning by model would be one more, after each chat.
        learning_extraction="rules",
    )
    running = start_stack(
        settings, emulator_port=free_port(), gateway_port=free_port(), execution="process", stream_port=0
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(process_stack: RunningStack) -> ApiClient:
    issued = process_stack.container.api_keys.issue(process_stack.settings.owner, "process tests")
    return ApiClient(process_stack.gateway_url, api_key=issued.key, timeout=EVENT_WAIT_SECONDS)


@pytest.fixture
def chat_pool(process_stack: RunningStack) -> WorkerPool:
    functions = process_stack.gateway.functions
    assert isinstance(functions, ProcessFunctions)
    return functions.pool("chat")


@pytest.fixture
def held(llm_stub: LlmStub) -> Iterator[LlmStub]:
    llm_stub.hold()
    try:
        yield llm_stub
    finally:
        llm_stub.release()


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def chat(client: ApiClient) -> HttpResult:
    return client.post("/chat", {"message": "Are you there?", "useMemory": False})


def assert_retryable_503(result: HttpResult, code: str) -> None:
    assert result.status == 503, result
    assert int(result.headers["retry-after"]) >= 1
    assert result.json["error"]["code"] == code, result.json


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_slow_chat_blocks_neither_health_nor_search(
    client: ApiClient, held: LlmStub, background: ThreadPoolExecutor
) -> None:
    assert client.post("/search", {"query": "warm up"}).status == 200  # the search worker has its model now
    order: list[str] = []
    arrivals = held.arrivals()

    def slow_chat() -> HttpResult:
        result = chat(client)
        order.append("chat answered")
        return result

    pending: Future[HttpResult] = background.submit(slow_chat)
    held.wait_for_arrivals(arrivals + 1)
    order.append("chat waiting on the model")
    health = client.get("/health")
    order.append("health answered")
    found = client.post("/search", {"query": "anything"})
    order.append("search answered")
    assert not pending.done()
    held.release()
    answered = pending.result(timeout=EVENT_WAIT_SECONDS)

    assert health.status == 200 and health.json == {"status": "ok"}
    assert found.status == 200, found
    assert answered.status == 200, answered
    assert answered.json["reply"] == STUB_REPLY
    assert order == ["chat waiting on the model", "health answered", "search answered", "chat answered"]


def test_two_chats_at_once_run_in_two_workers(
    client: ApiClient, held: LlmStub, chat_pool: WorkerPool, background: ThreadPoolExecutor
) -> None:
    arrivals = held.arrivals()
    first, second = background.submit(chat, client), background.submit(chat, client)
    held.wait_for_arrivals(arrivals + 2)  # both are with the model: the pool grew for the second
    assert len(set(chat_pool.pids(busy=True))) == 2
    held.release()
    assert first.result(timeout=EVENT_WAIT_SECONDS).status == 200
    assert second.result(timeout=EVENT_WAIT_SECONDS).status == 200


def test_a_streamed_chat_reaches_the_client_piece_by_piece(process_stack: RunningStack, held: LlmStub) -> None:
    """Through the Function URL's emulation (the shipped adapter in its own process), as in AWS."""
    assert process_stack.stream_url is not None
    url = urlsplit(process_stack.stream_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=EVENT_WAIT_SECONDS)
    key = process_stack.container.api_keys.issue(process_stack.settings.owner, "stream test").key
    body = json.dumps({"message": "Count to two.", "stream": True, "useMemory": False})
    connection.request(
        "POST", "/chat", body=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    first_event = [response.readline(), response.readline()]
    assert first_event[0] == b"event: delta\n"
    assert json.loads(first_event[1].removeprefix(b"data: ")) == {"text": "one "}
    assert not held.released.is_set()  # the first piece came while the model was still on the second
    held.release()
    rest = response.read().decode()
    connection.close()
    assert rest.strip().splitlines()[-2] == "event: done"
    assert json.loads(rest.strip().splitlines()[-1].removeprefix("data: "))["reply"] == "one two"


def test_the_http_api_answers_a_streamed_chat_in_one_body_once_it_is_complete(
    client: ApiClient, held: LlmStub, background: ThreadPoolExecutor
) -> None:
    """As API Gateway's HTTP APIs do: the same events, buffered until the function returns."""
    arrivals = held.arrivals()
    answer = background.submit(client.post, "/chat", {"message": "Count to two.", "stream": True, "useMemory": False})
    held.wait_for_arrivals(arrivals + 1)
    # The model has sent its first piece and is held on the second: nothing can have been answered.
    assert not answer.done()
    held.release()
    result = answer.result(timeout=EVENT_WAIT_SECONDS)
    assert result.status == 200, result
    assert result.headers["content-type"].startswith("text/event-stream")
    assert "transfer-encoding" not in result.headers
    assert int(result.headers["content-length"]) == len(result.json.encode())
    lines = result.json.strip().splitlines()
    assert lines[:2] == ["event: delta", 'data: {"text": "one "}']
    assert lines[-2] == "event: done" and json.loads(lines[-1].removeprefix("data: "))["reply"] == "one two"


def test_a_worker_killed_mid_request_costs_that_request_a_503(
    client: ApiClient, held: LlmStub, chat_pool: WorkerPool, background: ThreadPoolExecutor
) -> None:
    arrivals = held.arrivals()
    pending = background.submit(chat, client)
    held.wait_for_arrivals(arrivals + 1)
    (pid,) = chat_pool.pids(busy=True)
    os.kill(pid, signal.SIGKILL)
    assert_retryable_503(pending.result(timeout=EVENT_WAIT_SECONDS), "function_crashed")
    held.release()

    assert pid not in chat_pool.pids()
    answered = chat(client)
    assert answered.status == 200, answered
    assert answered.json["reply"] == STUB_REPLY
    assert client.get("/health").status == 200


@pytest.fixture(scope="module")
def short_lived(process_stack: RunningStack) -> Iterator[LocalGateway]:
    """A gateway with one function, tests/integration/gateway_functions.py, and a short timeout:
    the chat handler keeps to its own deadline, so it never runs past its timeout; this one can."""
    function = FunctionSpec("sleeper", "tests.integration.gateway_functions.handler", SHORT_TIMEOUT_SECONDS)
    gateway = LocalGateway(
        [Route("POST", "/run", function.handler)],
        port=0,
        functions=ProcessFunctions(process_stack.settings, [function], max_workers=1),
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_a_function_past_its_timeout_is_a_503_and_its_worker_is_replaced(short_lived: LocalGateway) -> None:
    client = ApiClient(short_lived.url, timeout=EVENT_WAIT_SECONDS)
    first = client.post("/run", {"hang": False})
    assert first.status == 200, first
    assert_retryable_503(client.post("/run", {"hang": True}), "function_timeout")
    assert process_gone(first.json["pid"])
    after = client.post("/run", {"hang": False})
    assert after.status == 200, after
    assert after.json["pid"] != first.json["pid"]


def test_stopping_a_stack_stops_its_workers(process_stack: RunningStack) -> None:
    settings = Settings(env=new_env("gw"), region=REGION, endpoint_url=process_stack.endpoint_url)
    running = start_stack(
        settings, emulator_port=free_port(), gateway_port=free_port(), execution="process", stream_port=0
    )
    functions = running.gateway.functions
    assert isinstance(functions, ProcessFunctions)
    names = ("chat", "memory", "search", "authorizer", "learning")
    pids = [pid for name in names for pid in functions.pool(name).pids()]
    assert len(pids) == 5  # one warm worker per function
    running.stop()
    assert all(process_gone(pid) for pid in pids)
