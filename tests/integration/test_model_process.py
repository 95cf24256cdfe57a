"""The offline model in its own process: killed (kill -9) or frozen (SIGSTOP) in the middle of a
request, it costs that request a 503 (or a streamed chat its error event), the supervisor brings it
back, and the API, the emulator and what was stored stay up.

The stack here is start_stack's own: the real bundled GGUF served by the child that start_stack
supervises, behind the real handlers and gateway, on the session's emulator."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from pai_core.bootstrap import Container, set_container
from pai_core.config import Settings
from pai_local.emulator import endpoint_answers, free_port
from pai_local.model_server import ModelServer, State, http_answers
from pai_local.stack import RunningStack, start_stack
from tests.integration.support import REGION, ApiClient, HttpResult, new_env

pytestmark = pytest.mark.integration

# Long enough that the model is still writing when it is killed a moment after its first piece.
LONG_ASK = "Tell me a long story about a lighthouse keeper and the sea, with many details."
RESTART_WAIT_SECONDS = 180.0
FROZEN_TIMEOUT_SECONDS = 4


@pytest.fixture(scope="module")
def supervised(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningStack, ApiClient]]:
    """A second stack on the session's emulator, whose chat model start_stack serves itself."""
    settings = Settings(
        env=new_env(),
        region=REGION,
        endpoint_url=stack.endpoint_url,
        llm_context_tokens=2048,
        llm_threads=1,  # as the session's model (tests/integration/conftest.py says why)
        # One attempt: a retry could land on the restarted model and hide the failure under test.
        llm_max_attempts=1,
        # As long as the chat function's 30 s allow (a model call is only started when it fits).
        llm_timeout_seconds=25,
        rate_limit_per_minute=1_000_000,
        daily_token_budget=10**12,
    )
    log = tmp_path_factory.mktemp("supervised-model") / "model-server.log"
    running = start_stack(
        settings, emulator_port=free_port(), gateway_port=free_port(), model_server_log=log, stream_port=0
    )
    server = running.model_server
    try:
        assert server is not None, "start_stack serves the local provider's model itself"
        assert running.settings.local_llm_url == server.url
        running.container.embedder = stack.container.embedder  # share the loaded embedding model
        issued = running.container.api_keys.issue(settings.owner, "model process tests")
        yield running, ApiClient(running.gateway_url, api_key=issued.key, timeout=180)
    finally:
        last_pid = server.pid if server is not None else None
        running.stop()
        set_container(stack.container)  # start_stack installed its own; the session's comes back
    assert last_pid is None or not alive(last_pid), "the stack's stop ends its model server"


# -- helpers -----------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def model_server(running: RunningStack) -> ModelServer:
    assert running.model_server is not None
    return running.model_server


def current_pid(server: ModelServer) -> int:
    pid = server.pid
    assert pid is not None and server.state is State.RUNNING, server.state
    return pid


def wait_for_restart(server: ModelServer, *, after: int, since: float) -> float:
    """Once the supervisor has restarted a child (after `after` restarts) and it answers: the
    seconds from `since` (time.monotonic) until then."""
    while not (server.restarts > after and server.state is State.RUNNING):
        assert time.monotonic() - since < RESTART_WAIT_SECONDS, f"no restart: {server.state}"
        time.sleep(0.05)
    return time.monotonic() - since


def report(what: str, seconds: float) -> None:
    print(f"\n{what}: {seconds:.2f} s", file=sys.stderr, flush=True)


@contextmanager
def streamed_chat(
    api: ApiClient, running: RunningStack, payload: dict[str, Any]
) -> Iterator[Iterator[tuple[str, dict[str, Any]]]]:
    """The server-sent events of a streamed chat, read as they arrive from the stack's Function URL
    (the HTTP API answers a streamed chat in one body, as in AWS)."""
    assert running.stream_url is not None
    url = urllib.parse.urlsplit(running.stream_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=180)
    try:
        connection.request(
            "POST",
            url.path + "/chat",
            body=json.dumps({**payload, "stream": True}),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.api_key}"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        yield events(response)
    finally:
        connection.close()


def events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    fields: dict[str, str] = {}
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            yield fields["event"], json.loads(fields["data"])
            fields = {}


def stored_roles(running: RunningStack, session: str) -> list[str]:
    turns = running.container.conversation_repository.recent(
        running.settings.owner, session, now=datetime.now(UTC), limit=10
    )
    return [turn.role for turn in turns]


def unique_session() -> str:
    return f"model-process-{secrets.token_urlsafe(9)}"


def assert_unavailable(result: HttpResult) -> None:
    assert result.status == 503, result
    assert int(result.headers["retry-after"]) >= 1
    assert result.json["error"]["code"] == "service_unavailable"


def interrupted_stream(
    api: ApiClient, running: RunningStack, interrupt: Callable[[int], None]
) -> tuple[str, list[tuple[str, dict[str, Any]]], float]:
    """A streamed chat, `interrupt`ed (given the model's pid) right after its first piece; its
    session, the events that came after that piece, and when (time.monotonic) it was interrupted."""
    session = unique_session()
    pid = current_pid(model_server(running))
    with streamed_chat(api, running, {"message": LONG_ASK, "sessionId": session, "useMemory": False}) as stream:
        name, first = next(stream)
        assert name == "delta", first
        interrupted_at = time.monotonic()
        interrupt(pid)
        rest = list(stream)
    return session, rest, interrupted_at


def assert_ended_with_unavailable(rest: list[tuple[str, dict[str, Any]]]) -> None:
    assert rest, "the stream ended without a word"
    *deltas, (last, data) = rest
    assert all(name == "delta" for name, _ in deltas)
    assert last == "error", f"the reply was complete before the model was interrupted: {data}"
    assert data["error"]["code"] == "service_unavailable"


def assert_everything_else_is_up(running: RunningStack, api: ApiClient, memory_id: str) -> None:
    assert api.get("/health").status == 200
    assert endpoint_answers(running.endpoint_url)
    kept = api.post("/memory", {"action": "retrieve", "id": memory_id})
    assert kept.status == 200, kept
    assert kept.json["content"] == "My cat is called Miso."


def assert_chat_works(api: ApiClient, memory_id: str) -> None:
    result = api.post("/chat", {"message": "What is my cat called?", "sessionId": unique_session()})
    assert result.status == 200, result
    assert result.json["reply"]
    assert memory_id in [source["id"] for source in result.json["sources"]]


@pytest.fixture(scope="module")
def memory_id(supervised: tuple[RunningStack, ApiClient]) -> str:
    _, api = supervised
    stored = api.post("/memory", {"action": "store", "content": "My cat is called Miso."})
    assert stored.status == 201, stored
    return str(stored.json["id"])


# -- kill -9 -----------------------------------------------------------------------------------------


def test_a_model_killed_mid_stream_ends_that_stream_with_an_error_and_is_restarted(
    supervised: tuple[RunningStack, ApiClient], memory_id: str
) -> None:
    running, api = supervised
    server = model_server(running)
    restarts = server.restarts

    session, rest, killed_at = interrupted_stream(api, running, lambda pid: os.kill(pid, signal.SIGKILL))

    assert_ended_with_unavailable(rest)
    assert stored_roles(running, session) == ["user"]  # no assistant turn from a broken reply
    report(
        "model server killed mid-stream: a new one answering after",
        wait_for_restart(server, after=restarts, since=killed_at),
    )
    assert_everything_else_is_up(running, api, memory_id)
    assert_chat_works(api, memory_id)


def test_a_model_killed_mid_request_is_a_503_with_retry_after_and_is_restarted(
    supervised: tuple[RunningStack, ApiClient], memory_id: str
) -> None:
    running, api = supervised
    server = model_server(running)
    restarts = server.restarts
    pid = current_pid(server)
    session = unique_session()
    answers: list[HttpResult] = []
    asking = threading.Thread(
        target=lambda: answers.append(
            api.post("/chat", {"message": LONG_ASK, "sessionId": session, "useMemory": False})
        )
    )
    asking.start()
    # The model serves /v1/models under the lock its generation holds: a request to it that gets no
    # answer means the chat is being generated right now.
    while http_answers(f"{server.url}/models", 0.5):
        assert asking.is_alive(), f"the chat was answered before it could be interrupted: {answers}"
        time.sleep(0.02)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    asking.join(timeout=180)

    assert_unavailable(answers[0])
    assert stored_roles(running, session) == ["user"]
    report(
        "model server killed mid-request: a new one answering after",
        wait_for_restart(server, after=restarts, since=killed_at),
    )
    assert_everything_else_is_up(running, api, memory_id)
    assert_chat_works(api, memory_id)


# -- frozen ------------------------------------------------------------------------------------------


def test_a_frozen_model_costs_requests_a_503_within_the_timeout_and_is_replaced(
    supervised: tuple[RunningStack, ApiClient], memory_id: str
) -> None:
    running, api = supervised
    server = model_server(running)
    restarts = server.restarts
    # For the chat that meets the frozen model: the same stack with a short model timeout (shorter
    # than the supervisor takes to give up on the model), its own composition root.
    impatient = Container(replace(running.settings, llm_timeout_seconds=FROZEN_TIMEOUT_SECONDS))
    impatient.embedder = running.container.embedder
    session = unique_session()
    frozen = current_pid(server)
    try:
        with streamed_chat(api, running, {"message": LONG_ASK, "sessionId": session, "useMemory": False}) as stream:
            name, first = next(stream)
            assert name == "delta", first
            frozen_at = time.monotonic()
            os.kill(frozen, signal.SIGSTOP)
            set_container(impatient)
            try:
                asked_at = time.monotonic()
                plain = api.post("/chat", {"message": "Hello?", "sessionId": unique_session(), "useMemory": False})
                report("chat to a frozen model: 503 after", time.monotonic() - asked_at)
            finally:
                set_container(running.container)
            rest = list(stream)  # the frozen model's reply, until the supervisor replaces it

        assert_unavailable(plain)
        assert_ended_with_unavailable(rest)
        assert stored_roles(running, session) == ["user"]
        replaced = wait_for_restart(server, after=restarts, since=frozen_at)
        report("model server frozen: a new one answering after", replaced)
        assert not alive(frozen), "the frozen child was killed, not left behind"
    finally:
        if alive(frozen):
            os.kill(frozen, signal.SIGCONT)
    assert_everything_else_is_up(running, api, memory_id)
    assert_chat_works(api, memory_id)
