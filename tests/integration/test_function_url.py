"""The streamed chat's Function URL as the local stack serves it (pai_local.function_url: the
shipped adapter, handlers/chat_stream_server.py, with the template's CORS), over HTTP on loopback,
next to the HTTP API, which buffers a streamed chat as API Gateway does."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from pai_core.bootstrap import Container
from pai_core.models import ChatMessage, Completion, TextDelta
from pai_local.stack import RunningStack
from tests.fakes import ScriptedChatModel
from tests.integration.support import ApiClient

pytestmark = pytest.mark.integration
WAIT_SECONDS = 60.0


class GatedModel(ScriptedChatModel):
    """Streams its first piece, then waits at a gate until the test opens it."""

    def __init__(self) -> None:
        super().__init__("one two three")
        self.at_gate = threading.Event()
        self.gate = threading.Event()

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        for index, item in enumerate(super().stream(messages, max_tokens=max_tokens)):
            if index == 1:
                self.at_gate.set()
                assert self.gate.wait(WAIT_SECONDS), "the test never opened the gate"
            yield item


@pytest.fixture
def gated(stack: RunningStack, installed: Callable[[Container], None]) -> Iterator[GatedModel]:
    model = GatedModel()
    container = Container(stack.settings, chat_model=model)
    container.embedder = stack.container.embedder  # share the loaded embedding model
    installed(container)
    try:
        yield model
    finally:
        model.gate.set()


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=WAIT_SECONDS)


def test_the_function_url_delivers_the_first_event_before_the_reply_is_complete(
    stack: RunningStack, api: ApiClient, gated: GatedModel
) -> None:
    assert stack.stream_url is not None
    connection = connect(stack.stream_url)
    body = json.dumps({"message": "Count to three.", "stream": True, "useMemory": False})
    connection.request("POST", "/chat", body=body, headers={"Authorization": f"Bearer {api.api_key}"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["server"] == "pai"  # no Python version given away
    first = [response.readline(), response.readline()]
    assert first == [b"event: delta\n", b'data: {"text": "one"}\n']
    # The first event is here and the gate is still shut: it came before the reply was complete (the
    # model reaches its gate once the first piece is out, which the reader may see first).
    assert not gated.gate.is_set()
    assert gated.at_gate.wait(WAIT_SECONDS)
    gated.gate.set()
    rest = response.read().decode().strip().splitlines()
    connection.close()
    assert rest[-2] == "event: done"
    assert json.loads(rest[-1].removeprefix("data: "))["reply"] == "one two three"


def test_the_http_api_answers_the_same_chat_only_once_it_is_complete(
    stack: RunningStack, api: ApiClient, gated: GatedModel
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(api.post, "/chat", {"message": "Count to three.", "stream": True, "useMemory": False})
        assert gated.at_gate.wait(WAIT_SECONDS)
        assert not answer.done()  # the model is held at its gate: there is nothing to answer with yet
        gated.gate.set()
        result = answer.result(timeout=WAIT_SECONDS)
    assert result.status == 200, result
    assert "transfer-encoding" not in result.headers
    lines = result.json.strip().splitlines()
    assert lines[:2] == ["event: delta", 'data: {"text": "one"}']
    assert lines[-2] == "event: done"


def test_without_a_valid_key_the_function_url_answers_pais_401(stack: RunningStack) -> None:
    assert stack.stream_url is not None
    for headers in ({}, {"Authorization": "Bearer pai_nothing_like_a_key"}):
        result = ApiClient(stack.stream_url).request(
            "POST", "/chat", body=json.dumps({"message": "hi", "stream": True}).encode(), headers=headers
        )
        assert result.status == 401, result
        assert result.headers["content-type"] == "application/json"
        assert result.json["error"]["code"] == "unauthorized"


def test_only_post_chat_is_served(stack: RunningStack, api: ApiClient) -> None:
    assert stack.stream_url is not None
    client = ApiClient(stack.stream_url, api_key=api.api_key)
    for method, path in (("POST", "/memory"), ("GET", "/health"), ("GET", "/chat")):
        result = client.request(method, path, body=b"{}" if method == "POST" else None)
        assert result.status == 404, (method, path)
        assert result.json == {"error": {"code": "route_not_found", "message": "no such route"}}


def test_a_body_over_the_function_urls_limit_is_refused_before_it_is_read(stack: RunningStack) -> None:
    assert stack.stream_url is not None
    connection = connect(stack.stream_url)
    connection.putrequest("POST", "/chat")
    connection.putheader("Content-Length", str(7 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "payload_too_large"
    connection.close()


def test_cors_allows_the_web_apps_origins_only(stack: RunningStack) -> None:
    assert stack.stream_url is not None
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    origins = (("http://127.0.0.1:8080", True), (stack.gateway_url, True), ("https://evil.example", False))
    for origin, allowed in origins:
        connection = connect(stack.stream_url)
        connection.request("OPTIONS", "/chat", headers={"Origin": origin, **preflight})
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.status == 204
        assert (response.headers.get("access-control-allow-origin") == origin) is allowed, origin
        if allowed:
            allowed_headers = response.headers["access-control-allow-headers"].lower()
            assert {"authorization", "content-type", "idempotency-key"} <= set(allowed_headers.split(", "))


def test_a_preflight_and_the_chat_after_it_share_one_connection(stack: RunningStack, api: ApiClient) -> None:
    """A 204 ends with its headers: a browser sends the POST on the connection its preflight used,
    and anything after the 204's headers would be read as the start of the POST's answer."""
    assert stack.stream_url is not None and api.api_key is not None
    connection = connect(stack.stream_url)
    origin = {"Origin": stack.gateway_url}
    connection.request("OPTIONS", "/chat", headers={**origin, "Access-Control-Request-Method": "POST"})
    preflight = connection.getresponse()
    assert (preflight.status, preflight.read()) == (204, b"")
    assert "transfer-encoding" not in preflight.headers
    body = json.dumps({"message": "Hello again.", "stream": True, "useMemory": False})
    headers = {**origin, "Authorization": f"Bearer {api.api_key}", "Content-Type": "application/json"}
    connection.request("POST", "/chat", body=body, headers=headers)
    answer = connection.getresponse()
    assert answer.status == 200
    events = answer.read().decode()
    connection.close()
    assert events.startswith("event: delta") and "event: done" in events
