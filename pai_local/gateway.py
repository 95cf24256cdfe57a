"""A local stand-in for API Gateway's HTTP API: each request becomes a payload-v2.0 event for the
function that infra/template.yaml routes it to, like `sam local start-api`.

HTTP itself is werkzeug's threaded WSGI server; what is ours is the translation of a request into
API Gateway v2 events and of the function's answer back into HTTP. Every answer the gateway makes
itself is JSON (`{"error": {"code", "message"}}`): a malformed request (a bad Content-Length, a body
shorter than it says, headers or a URI too long, an HTTP version it does not speak), an unknown
route or method, a body over Lambda's payload limit, and a function that failed, timed out or died.
A request whose body did not arrive whole is never passed to a function. Where the functions run
(processes like Lambda's execution environments, or threads of this process for the tests) is
pai_local.functions.

Routes with a Lambda REQUEST authorizer run it first, with the v2 authorizer event, and cache its
answer per identity value (the Authorization header) for the template's TTL, as API Gateway does
(PAI's template sets 0: nothing is cached here, and the authorizer remembers good keys itself, in
its own process, exactly as in AWS); the answer's context reaches the function as
`requestContext.authorizer.lambda`. One difference: API Gateway answers a request without the
identity header itself (401 `{"message":"Unauthorized"}`); this gateway passes it on without
authorizer context, and the function answers with PAI's own 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from handlers._events import build_authorizer_event, build_event
from pai_local.functions import Failed, Functions, InlineFunctions, Invocation, Returned, Started, Wrote
from pai_local.template import Authorizer, Route
from pai_local.web import WebApp

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

# Lambda's own limit on a synchronous invocation's request payload.
MAX_INVOKE_PAYLOAD_BYTES = 6 * 1024 * 1024
# How long a client may leave the connection idle while sending its request (or reading the answer).
CLIENT_TIMEOUT_SECONDS = 10.0
# What a client is told to wait before trying again after a 503 of the gateway's own.
RETRY_AFTER_SECONDS = 1
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side."
log = logging.getLogger("pai_local.gateway")


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._by_key = {(route.method, route.path): route for route in routes}

    def find(self, method: str, path: str) -> Route | None:
        return self._by_key.get((method, path))

    def methods_for(self, path: str) -> list[str]:
        return sorted(method for method, route_path in self._by_key if route_path == path)


# -- answers ------------------------------------------------------------------------------------------


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Iterable[bytes] = ()


def _json_error(status: int, code: str, message: str, *, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    body = _error_body(code, message)
    return _Reply(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
        [body],
    )


# What the client is told when a function did not answer; a 503 is worth retrying.
_FAILURES: dict[str, tuple[int, str, str]] = {
    "error": (500, "internal_error", INTERNAL_ERROR_MESSAGE),
    "timeout": (503, "function_timeout", "the request did not finish within the function's timeout"),
    "crashed": (503, "function_crashed", "the function stopped while handling the request"),
    "busy": (503, "function_busy", "every instance of the function is busy"),
    "unavailable": (503, "function_unavailable", "the function cannot run right now"),
}


def _failure(failed: Failed) -> _Reply:
    status, code, message = _FAILURES[failed.reason]
    retry = [("Retry-After", str(RETRY_AFTER_SECONDS))] if status == 503 else []
    return _json_error(status, code, message, headers=retry)


# Hop-by-hop headers are the server's to set, never the function's.
_NOT_FROM_FUNCTIONS = {"content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"}


def _proxy_reply(result: dict[str, Any]) -> _Reply:
    """A function's payload-2.0 result as HTTP (statusCode, headers, multiValueHeaders, cookies, body)."""
    raw_body = result.get("body") or ""
    payload = base64.b64decode(raw_body) if result.get("isBase64Encoded") else str(raw_body).encode("utf-8")
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name).lower()] = ", ".join(str(v) for v in values)
    listed = [(name, value) for name, value in headers.items() if name not in _NOT_FROM_FUNCTIONS]
    listed += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
    listed.append(("content-length", str(len(payload))))
    return _Reply(int(result.get("statusCode", 200)), listed, [payload])


class _StreamCut(ConnectionAbortedError):
    """Raised into the server to end a streamed answer without its last chunk, so the client sees
    it broke off: werkzeug drops the connection quietly on a ConnectionError."""


def _streamed(started: Started, invocation: Invocation) -> _Reply:
    event_stream = any(
        name.lower() == "content-type" and value.startswith("text/event-stream")
        for name, value in started.headers.items()
    )

    def body() -> Iterator[bytes]:
        over = False
        try:
            yield b""  # the status line and headers go out now, before the function's first write
            while True:
                message = invocation.next()
                if isinstance(message, Wrote):
                    yield message.text.encode("utf-8")
                elif isinstance(message, Returned):
                    over = True
                    return
                elif isinstance(message, Failed):
                    over = True
                    if not event_stream:
                        raise _StreamCut(message.reason)
                    # The status is out already; an event stream ends with an error event instead,
                    # as the chat handler ends its own failures.
                    _, code, text = _FAILURES[message.reason]
                    error = json.dumps({"error": {"code": code, "message": text}})
                    yield f"event: error\ndata: {error}\n\n".encode()
                    return
        finally:
            if not over:  # the client went away
                invocation.abandon()

    headers = [(name, value) for name, value in started.headers.items() if name.lower() not in _NOT_FROM_FUNCTIONS]
    return _Reply(started.status, headers, body())


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


# -- the WSGI application: HTTP request -> event -> function -> HTTP answer ------------------------


_DIGITS = re.compile(r"[0-9]{1,18}")


class _IncompleteBody(Exception):
    pass


class AuthorizerCache:
    """API Gateway's cache of authorizer answers: per authorizer and identity value, for the
    authorizer's TTL in the template (or `ttl_override`: 0 turns caching off). Entries are keyed by a digest of the
    value, so no API key stays in memory, and the oldest go first past `max_entries`."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, dict[str, Any]]] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self.ttl_override: int | None = None

    def get(self, authorizer: Authorizer, identity: str) -> dict[str, Any] | None:
        key = _cache_key(authorizer, identity)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, answer = entry
            if time.monotonic() >= expires:
                del self._entries[key]
                return None
            return answer

    def put(self, authorizer: Authorizer, identity: str, answer: dict[str, Any]) -> None:
        ttl = authorizer.ttl_seconds if self.ttl_override is None else self.ttl_override
        if ttl <= 0:
            return
        key = _cache_key(authorizer, identity)
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _cache_key(authorizer: Authorizer, identity: str) -> tuple[str, bytes]:
    return authorizer.name, hashlib.sha256(identity.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class _Request:
    route: Route
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    source_ip: str


class GatewayApp:
    def __init__(
        self,
        routes: RouteTable,
        functions: Functions,
        authorizer_cache: AuthorizerCache,
        *,
        web: WebApp | None = None,
    ) -> None:
        self._routes = routes
        self._functions = functions
        self._authorizer_cache = authorizer_cache
        self._web = web

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self._handle(environ)
        except Exception:
            log.exception("the local gateway failed on a request")
            reply = _json_error(500, "internal_error", INTERNAL_ERROR_MESSAGE)
        start_response(_status_line(reply.status), reply.headers)
        if environ["REQUEST_METHOD"] == "HEAD" and isinstance(reply.body, list):  # no route streams to HEAD
            return []
        return reply.body

    def _handle(self, environ: WSGIEnvironment) -> _Reply:
        length = self._declared_length(environ)
        if isinstance(length, _Reply):
            return length
        method: str = environ["REQUEST_METHOD"]
        target: str = environ["pai.target"]
        page = self._page(method, urlsplit(target).path)
        if page is not None:
            self._body(environ, length)
            return page
        route = self._route(method, urlsplit(target).path)
        if isinstance(route, _Reply):
            self._body(environ, length)  # read and dropped: werkzeug would wait for the client to close
            return route
        body = self._body(environ, length)
        if isinstance(body, _Reply):
            return body
        headers: dict[str, str] = {}
        for name, value in environ["pai.headers"]:
            key = name.lower()
            # API Gateway joins repeated headers with commas.
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        request = _Request(route, method, target, headers, body, environ.get("REMOTE_ADDR", ""))
        authorizer_context = None
        if route.authorizer is not None and headers.get(route.authorizer.identity_header):
            authorized = self._authorize(request, route.authorizer)
            if isinstance(authorized, _Reply):
                return authorized
            authorizer_context = authorized
        event = build_event(
            route,
            method=method,
            target=target,
            headers=headers,
            body=body,
            source_ip=request.source_ip,
            authorizer_context=authorizer_context,
        )
        return self._answer(route, self._functions.invoke(route.handler, event))

    def _page(self, method: str, path: str) -> _Reply | None:
        """The web app's answer, for a path no API route has (the API's routes always win)."""
        if self._web is None or self._routes.methods_for(path):
            return None
        page = self._web.answer(method, path)
        return None if page is None else _Reply(page.status, page.headers, [page.body])

    def _route(self, method: str, path: str) -> Route | _Reply:
        route = self._routes.find(method, path)
        if route is not None:
            return route
        allowed = self._routes.methods_for(path)
        if allowed:
            return _json_error(
                405, "method_not_allowed", f"{path} takes {', '.join(allowed)}", headers=[("Allow", ", ".join(allowed))]
            )
        return _json_error(404, "route_not_found", "no such route")

    @staticmethod
    def _answer(route: Route, invocation: Invocation) -> _Reply:
        first = invocation.next()
        if isinstance(first, Started):
            return _streamed(first, invocation)
        if isinstance(first, Wrote):  # a write before start(): the stream's status defaults to 200
            return _streamed(Started(200, {}), _Replayed(first, invocation))
        if isinstance(first, Failed):
            return _failure(first)
        try:
            return _proxy_reply(first.result or {})
        except (AttributeError, TypeError, ValueError, binascii.Error):
            log.error("function %s answered with something that is not a proxy result", route.handler)
            return _json_error(500, "internal_error", INTERNAL_ERROR_MESSAGE)

    @staticmethod
    def _declared_length(environ: WSGIEnvironment) -> int | _Reply | None:
        """The body's length from Content-Length (None: chunked, or no body), or the 4xx when the
        framing cannot be trusted: a body read with a wrong length would run into the next bytes."""
        lengths: list[str] = environ["pai.content_lengths"]
        encoding = environ.get("HTTP_TRANSFER_ENCODING")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                return _json_error(501, "unsupported_transfer_encoding", "only chunked transfer encoding is supported")
            if lengths:
                return _json_error(400, "invalid_content_length", "Content-Length cannot come with Transfer-Encoding")
            return None
        values = {value.strip() for value in lengths}
        if not values:
            return 0
        if len(values) > 1 or not _DIGITS.fullmatch(next(iter(values))):
            return _json_error(400, "invalid_content_length", "Content-Length must be one non-negative integer")
        return int(next(iter(values)))

    @classmethod
    def _body(cls, environ: WSGIEnvironment, length: int | None) -> bytes | _Reply:
        """The whole body, or the 4xx that ends the request: it never reaches a function in part."""
        if length is not None and length > MAX_INVOKE_PAYLOAD_BYTES:
            return _json_error(413, "payload_too_large", "request body is too large")
        try:
            body = cls._read_body(environ, length)
        except TimeoutError:
            return _json_error(408, "request_timeout", "the request body did not arrive in time")
        except (_IncompleteBody, OSError, ValueError):
            return _json_error(400, "incomplete_body", "the request body ended before its declared length")
        if len(body) > MAX_INVOKE_PAYLOAD_BYTES:
            return _json_error(413, "payload_too_large", "request body is too large")
        return body

    @staticmethod
    def _read_body(environ: WSGIEnvironment, length: int | None) -> bytes:
        stream: IO[bytes] = environ["wsgi.input"]
        if length is None:  # chunked: up to one byte past the limit, to know it is over
            pieces, size = [], 0
            while size <= MAX_INVOKE_PAYLOAD_BYTES:
                piece = stream.read(MAX_INVOKE_PAYLOAD_BYTES + 1 - size)
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
            return b"".join(pieces)
        pieces, left = [], length
        while left > 0:
            piece = stream.read(left)
            if not piece:
                raise _IncompleteBody
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)

    def _authorize(self, request: _Request, authorizer: Authorizer) -> dict[str, Any] | _Reply:
        """The authorizer's context for the request, or the answer when the request ends here: 403
        for a denial, as API Gateway answers one; 500 or 503 when the authorizer failed."""
        identity = request.headers[authorizer.identity_header]
        answer = self._authorizer_cache.get(authorizer, identity)
        if answer is None:
            event = build_authorizer_event(
                request.route,
                method=request.method,
                target=request.target,
                headers=request.headers,
                identity=identity,
                source_ip=request.source_ip,
            )
            invocation = self._functions.invoke(authorizer.handler, event)
            message = invocation.next()
            if isinstance(message, Failed):
                return _failure(message)
            result = message.result if isinstance(message, Returned) else None
            if not isinstance(result, dict) or not isinstance(result.get("isAuthorized"), bool):
                if not isinstance(message, Returned):
                    invocation.abandon()
                log.error("authorizer %s answered without a boolean isAuthorized", authorizer.handler)
                return _json_error(500, "internal_error", INTERNAL_ERROR_MESSAGE)
            answer = result
            self._authorizer_cache.put(authorizer, identity, answer)
        if not answer["isAuthorized"]:
            return _json_error(403, "forbidden", "the authorizer denied the request")
        return dict(answer.get("context") or {})


class _Replayed:
    """An invocation with one message put back in front."""

    def __init__(self, first: Wrote, rest: Invocation) -> None:
        self._first: Wrote | None = first
        self._rest = rest

    def next(self) -> Started | Wrote | Returned | Failed:
        first, self._first = self._first, None
        return first if first is not None else self._rest.next()

    def abandon(self) -> None:
        self._rest.abandon()


# -- HTTP: werkzeug's server, with JSON for the errors it answers itself ------------------------------


class _Input:
    """The connection's input stream. After a read has timed out the socket cannot be read any
    more, so every later read comes back empty: werkzeug's draining of a finished request ends,
    instead of failing on it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.timed_out = False

    def _guarded(self, read: Callable[..., bytes], *args: Any) -> bytes:
        if self.timed_out:
            return b""
        try:
            return read(*args)
        except TimeoutError:
            self.timed_out = True
            raise

    def read(self, size: int = -1) -> bytes:
        return self._guarded(self._raw.read, size)

    def read1(self, size: int = -1) -> bytes:
        return self._guarded(self._raw.read1, size)  # type: ignore[attr-defined]

    def readline(self, size: int = -1) -> bytes:
        return self._guarded(self._raw.readline, size)

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _error_code(status: HTTPStatus) -> str:
    return re.sub(r"[^a-z0-9]+", "_", status.phrase.lower()).strip("_")


class GatewayRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler, with JSON for the errors http.server answers before the
    application runs (414, 431, 505, a malformed request line) and the gateway's own log."""

    timeout = CLIENT_TIMEOUT_SECONDS  # socketserver sets it on the connection

    def setup(self) -> None:
        super().setup()
        self.rfile = _Input(cast(IO[bytes], self.rfile))  # type: ignore[assignment]

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        # As the client sent them: werkzeug's environ drops names with "_" and keeps one Content-Length.
        environ["pai.target"] = self.path
        environ["pai.headers"] = list(self.headers.items())
        environ["pai.content_lengths"] = self.headers.get_all("content-length") or []
        return environ

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        except TimeoutError:
            self.send_error(HTTPStatus.REQUEST_TIMEOUT, "the request's headers did not arrive in time")
            return False

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        status = HTTPStatus(code)
        # http.server has not taken the request's version yet when it refuses it (505): without
        # this the answer would go out as HTTP/0.9, with no status line.
        if self.request_version == "HTTP/0.9":
            self.request_version = self.protocol_version
        body = _error_body(_error_code(status), message or status.description)
        self.send_response(code, status.phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        self._discard_unread()

    def _discard_unread(self) -> None:
        """Reads what the client has sent past the point of refusal, so that closing the socket
        does not reset the connection before the client has read the answer."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ)
            for _ in range(1000):
                if not selector.select(timeout=0.05):
                    break
                try:
                    if not self.connection.recv(1 << 16):
                        break
                except OSError:
                    break

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info('%s "%s" %s', self.address_string(), self.requestline, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        # werkzeug's own messages: timeouts and dropped connections are the clients' doing.
        log.info("%s %s", self.address_string(), message % args if args else message)


# -- the gateway ---------------------------------------------------------------------------------------


class LocalGateway:
    """The HTTP API on `host:port`. `functions` runs the template's functions: InlineFunctions()
    (the default: threads of this process) or ProcessFunctions (worker processes, like Lambda).
    `web`: the web app, served at `/` beside the API (pai_local.web), or None for the API alone."""

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        functions: Functions | None = None,
        client_timeout_seconds: float = CLIENT_TIMEOUT_SECONDS,
        web: WebApp | None = None,
    ) -> None:
        self.authorizer_cache = AuthorizerCache()
        self.functions: Functions = functions if functions is not None else InlineFunctions()
        app = GatewayApp(RouteTable(routes), self.functions, self.authorizer_cache, web=web)
        handler = type("LocalGatewayRequestHandler", (GatewayRequestHandler,), {"timeout": client_timeout_seconds})
        # Bound here, not by werkzeug, so that a port in use is an OSError (werkzeug exits the process).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family)
        try:
            self._server: BaseWSGIServer = make_server(
                host, port, app, threaded=True, request_handler=handler, fd=listener.fileno()
            )
        finally:
            listener.close()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def clear_authorizer_cache(self) -> None:
        """Forget every cached authorizer answer, as if their TTL had passed (a revocation shows at once)."""
        self.authorizer_cache.clear()

    def start(self) -> str:
        """Starts the functions' environments, then serves in a background thread."""
        self.functions.start()
        self._thread = threading.Thread(target=self._server.serve_forever, name="pai-gateway", daemon=True)
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self.functions.start()
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self.functions.stop()
