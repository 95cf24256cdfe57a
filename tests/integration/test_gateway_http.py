"""The local gateway's HTTP, over raw sockets: every request it refuses gets a JSON error with a real
status line, no connection hangs (each exchange runs under a socket timeout), a request whose body
did not arrive whole is never executed, and no client mistake puts a traceback in the log.

The gateway here is a second LocalGateway in front of the session stack's functions (inline, with
its composition root), with a short client timeout so that a stalled client is refused quickly."""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest

from pai_local.gateway import MAX_INVOKE_PAYLOAD_BYTES, LocalGateway
from pai_local.stack import RunningStack
from pai_local.template import Template
from tests.integration.support import ApiClient

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT_SECONDS = 1.0
# Far past the gateway's own client timeout: an exchange that reaches it has hung.
SOCKET_TIMEOUT_SECONDS = 20.0


class Answer(NamedTuple):
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def gateway(stack: RunningStack) -> Iterator[LocalGateway]:
    running = LocalGateway(
        Template.load(Env=stack.settings.env).routes(), port=0, client_timeout_seconds=CLIENT_TIMEOUT_SECONDS
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def port(gateway: LocalGateway) -> int:
    return int(urlsplit(gateway.url).port or 0)


@pytest.fixture
def client(gateway: LocalGateway, api: ApiClient) -> ApiClient:
    return ApiClient(gateway.url, api_key=api.api_key)


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Client mistakes are logged as one line each, never with a traceback."""
    caplog.set_level(logging.INFO)
    yield
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
    assert "Traceback" not in capfd.readouterr().err


def exchange(port: int, raw: bytes, *, close_write: bool = False) -> Answer:
    """Sends `raw` as it is, then reads until the gateway closes the connection (it closes every
    one after its answer). `close_write`: the client ends its side once it has sent `raw`."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
        sock.sendall(raw)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"])
    return Answer(int(status), reason, headers, body)


def request(
    method: str, target: str, *, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    all_headers = dict(headers or {})
    if length and body:
        all_headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_json_error(answer: Answer, status: int, code: str | None = None) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    error = answer.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error


def store_request(key: str, category: str, **overrides: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"action": "store", "content": "only whole requests run", "category": category}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **overrides}
    return body, headers


def stored_in(client: ApiClient, category: str) -> list[Any]:
    listed = client.post("/memory", {"action": "list", "category": category})
    assert listed.status == 200, listed
    return list(listed.json["items"])


# -- the requests the gateway refuses ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "0x10", "12 34", ""])
def test_a_content_length_that_is_not_a_number_is_a_400(port: int, value: str) -> None:
    raw = request("POST", "/memory", headers={"Content-Length": value, "Content-Type": "application/json"})
    assert_json_error(exchange(port, raw + b"{}"), 400, "invalid_content_length")


def test_two_different_content_lengths_are_a_400(port: int) -> None:
    raw = request("POST", "/memory", headers={"Content-Length": "2", "content-length": "3"}) + b"{}"
    assert_json_error(exchange(port, raw), 400, "invalid_content_length")


def test_content_length_with_chunked_encoding_is_a_400(port: int) -> None:
    raw = request("POST", "/memory", headers={"Content-Length": "7", "Transfer-Encoding": "chunked"})
    assert_json_error(exchange(port, raw + b"2\r\n{}\r\n0\r\n\r\n"), 400, "invalid_content_length")


def test_an_unknown_transfer_encoding_is_a_501(port: int) -> None:
    raw = request("POST", "/memory", headers={"Transfer-Encoding": "gzip, chunked"})
    assert_json_error(exchange(port, raw + b"0\r\n\r\n"), 501)


def test_a_body_shorter_than_its_content_length_times_out_and_is_not_executed(
    port: int, client: ApiClient, api: ApiClient
) -> None:
    category = f"short{secrets.token_hex(4)}"
    body, headers = store_request(str(api.api_key), category)
    raw = request("POST", "/memory", body=body, headers={**headers, "Content-Length": str(len(body) + 40)})
    assert_json_error(exchange(port, raw), 408, "request_timeout")
    assert stored_in(client, category) == []


def test_a_body_cut_short_by_the_client_is_a_400_and_is_not_executed(
    port: int, client: ApiClient, api: ApiClient
) -> None:
    category = f"cut{secrets.token_hex(4)}"
    body, headers = store_request(str(api.api_key), category)
    raw = request("POST", "/memory", body=body, headers={**headers, "Content-Length": str(len(body) + 40)})
    assert_json_error(exchange(port, raw, close_write=True), 400, "incomplete_body")
    assert stored_in(client, category) == []


def test_a_chunked_body_cut_short_is_not_executed(port: int, client: ApiClient, api: ApiClient) -> None:
    category = f"chunk{secrets.token_hex(4)}"
    body, headers = store_request(str(api.api_key), category, **{"Transfer-Encoding": "chunked"})
    raw = request("POST", "/memory", headers=headers, length=False) + f"{len(body):x}\r\n".encode() + body + b"\r\n"
    assert_json_error(exchange(port, raw), 408, "request_timeout")  # the last chunk never came
    assert stored_in(client, category) == []


def test_a_whole_chunked_body_is_executed(port: int, client: ApiClient, api: ApiClient) -> None:
    category = f"chunked{secrets.token_hex(4)}"
    body, headers = store_request(str(api.api_key), category, **{"Transfer-Encoding": "chunked"})
    chunks = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in (body[:10], body[10:]))
    answer = exchange(port, request("POST", "/memory", headers=headers, length=False) + chunks + b"0\r\n\r\n")
    assert answer.status == 201, answer
    assert [item["id"] for item in stored_in(client, category)] == [answer.json()["id"]]


def test_a_body_over_lambdas_payload_limit_is_a_413_before_it_is_read(port: int) -> None:
    raw = request("POST", "/memory", headers={"Content-Length": str(MAX_INVOKE_PAYLOAD_BYTES + 1)})
    assert_json_error(exchange(port, raw), 413, "payload_too_large")


def test_a_body_over_the_limit_sent_whole_still_gets_its_413(port: int) -> None:
    body = b"x" * (MAX_INVOKE_PAYLOAD_BYTES + 1)
    assert_json_error(exchange(port, request("POST", "/memory", body=body)), 413, "payload_too_large")


def test_a_chunked_body_over_the_limit_is_a_413(port: int) -> None:
    piece = b"x" * (1 << 20)
    chunks = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") * 7 + b"0\r\n\r\n"
    raw = request("POST", "/memory", headers={"Transfer-Encoding": "chunked"}, length=False) + chunks
    assert_json_error(exchange(port, raw), 413, "payload_too_large")


def test_a_header_line_too_long_is_a_431(port: int) -> None:
    raw = request("GET", "/health", headers={"X-Long": "a" * 70_000})
    assert_json_error(exchange(port, raw), 431)


def test_too_many_headers_are_a_431(port: int) -> None:
    raw = request("GET", "/health", headers={f"X-Header-{index}": "1" for index in range(150)})
    assert_json_error(exchange(port, raw), 431)


def test_a_uri_too_long_is_a_414(port: int) -> None:
    assert_json_error(exchange(port, request("GET", "/health?" + "q" * 70_000)), 414)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0"])
def test_an_http_version_it_does_not_speak_is_a_505_with_a_status_line(port: int, version: str) -> None:
    answer = exchange(port, f"GET /health {version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert_json_error(answer, 505, "http_version_not_supported")


@pytest.mark.parametrize("line", ["GET /health HTTP/1.x", "GARBAGE", "POST /memory"])
def test_a_malformed_request_line_is_a_400(port: int, line: str) -> None:
    assert_json_error(exchange(port, f"{line}\r\nHost: 127.0.0.1\r\n\r\n".encode()), 400)


def test_headers_that_stop_arriving_are_a_408(port: int) -> None:
    assert_json_error(exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"), 408)


def test_an_unknown_route_is_a_404_and_a_wrong_method_a_405(port: int) -> None:
    assert_json_error(exchange(port, request("GET", "/no-such-route")), 404, "route_not_found")
    answer = exchange(port, request("DELETE", "/memory"))
    assert_json_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "POST"


# -- and what it serves -----------------------------------------------------------------------------


def test_a_plain_request_is_served_and_the_connection_closed(port: int) -> None:
    answer = exchange(port, request("GET", "/health"))
    assert answer.status == 200 and answer.json() == {"status": "ok"}
    assert answer.headers["connection"] == "close"


def test_a_streamed_chat_is_one_buffered_body_as_from_api_gateway(port: int, api: ApiClient) -> None:
    body = json.dumps({"message": "Say hello.", "stream": True, "useMemory": False}).encode()
    headers = {"Authorization": f"Bearer {api.api_key}", "Content-Type": "application/json"}
    answer = exchange(port, request("POST", "/chat", body=body, headers=headers))
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "transfer-encoding" not in answer.headers
    assert int(answer.headers["content-length"]) == len(answer.body)
    assert answer.body.startswith(b"event: delta") and b"event: done" in answer.body
