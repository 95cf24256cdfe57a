"""The streamed chat's HTTP adapter: POST /chat on the chat function's Function URL, written to the
client event by event as the model produces them.

The managed Python runtime answers an invocation with one buffered payload, and API Gateway HTTP
APIs buffer whatever a function returns. A Function URL with `InvokeMode: RESPONSE_STREAM` streams,
but only from a runtime that writes to Lambda's streaming API: the AWS Lambda Web Adapter (a layer:
an extension plus `AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap`) does, by proxying each invocation to an
HTTP server inside the execution environment and passing its chunked response on as it comes.
This module is that server (`run.sh` starts it on the adapter's port).

What it does with a request is what API Gateway does in front of the other routes, so the chat
handler cannot tell the two apart:
- the same API key check: the authorizer's own code (handlers.authorizer.handler), called in the
  process with API Gateway's v2 authorizer event for every request, as API Gateway calls it (its TTL
  is 0; the authorizer itself remembers good keys for AuthCacheSeconds), a bad key a 401 of PAI's
  own before anything streams;
- the same payload-2.0 event for handlers.chat.handler (handlers/_events.py, which the local gateway
  uses too), with `context.response_stream` set, so `"stream": true` is written as it is produced.

Only `POST /chat` (and `OPTIONS /chat`, the CORS preflight) is served; anything else is a 404 JSON.
CORS itself is the Function URL's (its Cors configuration); `cors=` is for serving it locally.

The core (`ChatStreamApp.handle`) takes a request and a response sink, with no socket: the HTTP
server around it (`ChatStreamServer`, the standard library's threaded server) only parses, frames
chunks and sends. One invocation runs at a time per process, as in a Lambda execution environment:
Powertools keeps the event being resolved in class-level state.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

import handlers._logging  # noqa: F401  (library loggers pinned before this server logs anything)
from handlers._events import build_authorizer_event, build_event

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
log = logging.getLogger("pai.chat_stream")

# A Function URL's own limit on a request's payload; the chat handler's 256 KiB limit (413) is inside it.
MAX_REQUEST_BYTES = 6 * 1024 * 1024
# The chat function's Timeout, when the Web Adapter does not pass the invocation's deadline.
DEFAULT_TIMEOUT_SECONDS = 30.0
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side."
CHAT_PATH = "/chat"
# The Web Adapter passes the invocation's Lambda context and the Function URL's request context as
# these request headers; they are not the client's, so they never reach the handler's event.
LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"
REQUEST_CONTEXT_HEADER = "x-amzn-request-context"
# Where the Web Adapter calls the SnapStart hooks (AWS_LWA_SNAPSTART_*_PATH in the template). The
# adapter refuses these paths to callers from outside; a request that came through the Function URL
# (it carries the request context header) is refused here too.
BEFORE_SNAPSHOT_PATH = "/_snapstart/before-snapshot"
AFTER_RESTORE_PATH = "/_snapstart/after-restore"


class ResponseSink(Protocol):
    """Where an answer goes: the status and headers once, then the body piece by piece."""

    def start(self, status: int, headers: dict[str, str]) -> None: ...

    def write(self, text: str) -> None: ...


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path and query, as the request line has it
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str = ""


class _TrackedSink:
    """The handler's `context.response_stream`: remembers whether the status line is out."""

    def __init__(self, sink: ResponseSink) -> None:
        self._sink = sink
        self.started = False

    def start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        self._sink.start(status, headers)

    def write(self, text: str) -> None:
        if not self.started:  # a write before start(): Lambda's stream defaults to 200
            self.start(200, {})
        if text:
            self._sink.write(text)


@dataclass
class StreamLambdaContext:
    """The parts of Lambda's context that the handlers and Powertools read, built from the context
    the Web Adapter forwards (`x-amzn-lambda-context`), and the response stream."""

    function_name: str
    timeout_seconds: float
    response_stream: ResponseSink | None = None
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 0
    log_group_name: str = ""
    log_stream_name: str = ""
    deadline: float = 0.0  # time.time() seconds

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.time() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))

    @classmethod
    def forwarded(
        cls, header: str | None, *, function_name: str, timeout_seconds: float, stream: ResponseSink | None
    ) -> StreamLambdaContext:
        """From the adapter's JSON header; anything missing or malformed falls back to defaults. The
        deadline is never later than `timeout_seconds` from now, whoever set the header."""
        context = cls(function_name, timeout_seconds, stream)
        try:
            forwarded = json.loads(header) if header else {}
        except ValueError:
            forwarded = {}
        if not isinstance(forwarded, dict):
            return context
        config = forwarded.get("env_config")
        config = config if isinstance(config, dict) else {}
        context.aws_request_id = str(forwarded.get("request_id") or context.aws_request_id)
        context.invoked_function_arn = str(forwarded.get("invoked_function_arn") or "")
        context.function_name = str(config.get("function_name") or function_name)
        context.function_version = str(config.get("version") or context.function_version)
        context.log_group_name = str(config.get("log_group") or "")
        context.log_stream_name = str(config.get("log_stream") or "")
        memory = config.get("memory")
        context.memory_limit_in_mb = memory if isinstance(memory, int) else 0
        deadline = forwarded.get("deadline")
        if isinstance(deadline, int | float) and not isinstance(deadline, bool):
            context.deadline = min(context.deadline, deadline / 1000)
        return context


def _load(dotted: str) -> LambdaHandler:
    import importlib

    module_name, name = dotted.rsplit(".", 1)
    handler: LambdaHandler = getattr(importlib.import_module(module_name), name)
    return handler


_ONE_AT_A_TIME = threading.Lock()


class ChatStreamApp:
    """HTTP request -> (authorizer) -> payload-2.0 event -> handlers.chat.handler -> response sink.

    `chat_handler` and `authorizer_handler` default to the shipped ones; `invocation_guard` makes
    invocations take turns (default: one at a time in this process); `snapstart_hooks` are the
    before-snapshot and after-restore callables the Web Adapter's hook paths run (None: not served)."""

    def __init__(
        self,
        *,
        chat_handler: LambdaHandler | None = None,
        authorizer_handler: LambdaHandler | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        function_name: str = "chat-stream",
        invocation_guard: Callable[[], AbstractContextManager[object]] | None = None,
        snapstart_hooks: tuple[Callable[[], None], Callable[[], None]] | None = None,
    ) -> None:
        self._chat = chat_handler
        self._authorizer = authorizer_handler
        self._timeout_seconds = timeout_seconds
        self._function_name = function_name
        self._guard = invocation_guard or (lambda: _ONE_AT_A_TIME)
        self._snapstart_hooks = snapstart_hooks

    def _chat_handler(self) -> LambdaHandler:
        if self._chat is None:
            self._chat = _load("handlers.chat.handler")
        return self._chat

    def _authorizer_handler(self) -> LambdaHandler:
        if self._authorizer is None:
            self._authorizer = _load("handlers.authorizer.handler")
        return self._authorizer

    def handle(self, request: HttpRequest, sink: ResponseSink) -> None:
        """Answers `request` into `sink`: start() once, then write()s. Never raises for a request."""
        path = urlsplit(request.target).path
        headers = _joined(request.headers)
        if path in (BEFORE_SNAPSHOT_PATH, AFTER_RESTORE_PATH) and self._snapstart_hooks is not None:
            self._run_hook(path, request.method, headers, sink)
            return
        if path != CHAT_PATH or request.method not in ("POST", "OPTIONS"):
            _json(sink, 404, {"error": {"code": "route_not_found", "message": "no such route"}})
            return
        if request.method == "OPTIONS":  # a preflight the Function URL's CORS did not answer itself
            sink.start(204, {"Allow": "POST, OPTIONS"})
            return
        with self._guard():
            self._invoke(request, headers, sink)

    def _invoke(self, request: HttpRequest, headers: dict[str, str], sink: ResponseSink) -> None:
        lambda_header = headers.pop(LAMBDA_CONTEXT_HEADER, None)
        source_ip = _source_ip(headers.pop(REQUEST_CONTEXT_HEADER, None)) or request.source_ip
        route = _Route("POST", CHAT_PATH)
        authorizer_context = None
        identity = headers.get("authorization")
        if identity:  # API Gateway skips the authorizer without its identity source; the handler says 401
            answer = self._authorize(
                route, request, headers=headers, identity=identity, source_ip=source_ip, lambda_header=lambda_header
            )
            if answer is None:
                _json(sink, 500, {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}})
                return
            if not answer["isAuthorized"]:
                _json(sink, 403, {"error": {"code": "forbidden", "message": "the authorizer denied the request"}})
                return
            authorizer_context = dict(answer.get("context") or {})
        event = build_event(
            route,
            method="POST",
            target=request.target,
            headers=headers,
            body=request.body,
            source_ip=source_ip,
            authorizer_context=authorizer_context,
        )
        event["requestContext"]["apiId"] = "function-url"
        stream = _TrackedSink(sink)
        try:
            result = self._chat_handler()(event, self._context(lambda_header, stream))
        except Exception as exc:
            log.exception("the chat handler failed", exc_info=exc)
            if stream.started:
                stream.write(_error_event())
            else:
                _json(sink, 500, {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}})
            return
        if not stream.started:
            _proxy_result(sink, result)

    def _authorize(
        self,
        route: _Route,
        request: HttpRequest,
        *,
        headers: dict[str, str],
        identity: str,
        source_ip: str,
        lambda_header: str | None,
    ) -> dict[str, Any] | None:
        """The authorizer's answer for this Authorization value; None when the authorizer failed or
        answered something that is not an answer."""
        event = build_authorizer_event(
            route, method="POST", target=request.target, headers=headers, identity=identity, source_ip=source_ip
        )
        try:
            answer = self._authorizer_handler()(event, self._context(lambda_header, None))
        except Exception as exc:
            log.exception("the API key authorizer failed", exc_info=exc)
            return None
        if not isinstance(answer, dict) or not isinstance(answer.get("isAuthorized"), bool):
            log.error("the API key authorizer answered without a boolean isAuthorized")
            return None
        return answer

    def _context(self, lambda_header: str | None, stream: ResponseSink | None) -> StreamLambdaContext:
        return StreamLambdaContext.forwarded(
            lambda_header, function_name=self._function_name, timeout_seconds=self._timeout_seconds, stream=stream
        )

    def _run_hook(self, path: str, method: str, headers: dict[str, str], sink: ResponseSink) -> None:
        if method != "POST" or REQUEST_CONTEXT_HEADER in headers or self._snapstart_hooks is None:
            _json(sink, 404, {"error": {"code": "route_not_found", "message": "no such route"}})
            return
        before, after = self._snapstart_hooks
        with self._guard():
            try:
                if path == BEFORE_SNAPSHOT_PATH:
                    before()
                else:
                    after()
            except Exception as exc:
                log.exception("SnapStart hook %s failed", path, exc_info=exc)
                _json(sink, 500, {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}})
                return
        _json(sink, 200, {"status": "ok"})


@dataclass(frozen=True)
class _Route:
    method: str
    path: str


def _joined(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names, repeated headers joined with commas, as API Gateway passes them."""
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def _source_ip(request_context: str | None) -> str:
    try:
        context = json.loads(request_context) if request_context else {}
        ip = context["http"]["sourceIp"]
    except (ValueError, KeyError, TypeError):
        return ""
    return ip if isinstance(ip, str) else ""


def _json(sink: ResponseSink, status: int, payload: dict[str, Any]) -> None:
    sink.start(status, {"Content-Type": "application/json"})
    sink.write(json.dumps(payload))


def _error_event() -> str:
    error = {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}}
    return f"event: error\ndata: {json.dumps(error)}\n\n"


# Hop-by-hop headers are the server's to set, never the function's.
_NOT_FROM_FUNCTIONS = {"content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"}


def _proxy_result(sink: ResponseSink, result: Any) -> None:
    """A payload-2.0 proxy result (statusCode, headers, body) written to the sink."""
    try:
        status = int(result.get("statusCode", 200))
        raw = result.get("body") or ""
        body = base64.b64decode(raw).decode("utf-8") if result.get("isBase64Encoded") else str(raw)
        headers = {
            str(name): str(value)
            for name, value in (result.get("headers") or {}).items()
            if str(name).lower() not in _NOT_FROM_FUNCTIONS
        }
    except (AttributeError, TypeError, ValueError, binascii.Error):
        log.error("the chat handler answered with something that is not a proxy result")
        _json(sink, 500, {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}})
        return
    sink.start(status, headers)
    sink.write(body)


# -- HTTP: the standard library's threaded server, chunked responses ----------------------------------


@dataclass(frozen=True)
class CorsPolicy:
    """A Function URL's Cors configuration, applied by this server where no Function URL is in front
    (the local stack). On Lambda the Function URL applies it, and the server is given none."""

    allow_origins: tuple[str, ...]
    allow_headers: tuple[str, ...]
    allow_methods: tuple[str, ...] = ("POST",)
    max_age: int = 600

    def headers_for(self, origin: str | None, *, preflight: bool) -> dict[str, str]:
        if origin is None or ("*" not in self.allow_origins and origin not in self.allow_origins):
            return {}
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if preflight:
            headers["Access-Control-Allow-Methods"] = ", ".join(self.allow_methods)
            headers["Access-Control-Allow-Headers"] = ", ".join(self.allow_headers)
            headers["Access-Control-Max-Age"] = str(self.max_age)
        return headers


# Answers that end with their headers (RFC 9110 6.4.1): anything after them would be read by the
# client as the start of the next answer on the same connection.
_BODYLESS_STATUSES = {HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED}


class _ChunkedSink:
    def __init__(self, handler: _RequestHandler, extra_headers: Mapping[str, str]) -> None:
        self._handler = handler
        self._extra = extra_headers
        self.started = False
        self._chunked = False

    def start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        handler = self._handler
        handler.send_response(status)
        for name, value in {**headers, **self._extra}.items():
            handler.send_header(name, value)
        self._chunked = status not in _BODYLESS_STATUSES and handler.command != "HEAD"
        if self._chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.flush()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        if data and self._chunked:
            self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self._handler.wfile.flush()

    def finish(self) -> None:
        if self._chunked:
            self._handler.wfile.write(b"0\r\n\r\n")
            self._handler.wfile.flush()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pai"
    server: ChatStreamServer
    timeout = 30.0  # a client that stops sending mid-request

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def _dispatch(self) -> None:
        body = self._body()
        if body is None:
            return
        origin = self.headers.get("origin")
        cors = self.server.cors
        extra = cors.headers_for(origin, preflight=self.command == "OPTIONS") if cors is not None else {}
        request = HttpRequest(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        sink = _ChunkedSink(self, extra)
        try:
            self.server.app.handle(request, sink)
        except Exception as exc:
            log.exception("the stream adapter failed on a request", exc_info=exc)
            if not sink.started:
                _json(sink, 500, {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}})
        with contextlib.suppress(OSError):
            sink.finish()

    def _body(self) -> bytes | None:
        """The whole body, or None once the request has been refused (a 4xx JSON) or the client left."""
        lengths = self.headers.get_all("content-length") or []
        refusal = self._framing_refusal(lengths)
        if refusal is not None:
            self._refuse(*refusal)
            return None
        length = int(lengths[0]) if lengths else 0
        try:
            body = self.rfile.read(length) if length else b""
        except OSError:
            self.close_connection = True
            return None
        if len(body) != length:
            self._refuse(400, "incomplete_body", "the request body ended before its declared length")
            return None
        return body

    def _framing_refusal(self, lengths: list[str]) -> tuple[int, str, str] | None:
        if self.headers.get("transfer-encoding"):
            return 411, "length_required", "send the body with a Content-Length"
        if not lengths:
            return None
        if len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
            return 400, "invalid_content_length", "Content-Length must be one non-negative integer"
        if int(lengths[0]) > MAX_REQUEST_BYTES:
            return 413, "payload_too_large", "request body is too large"
        return None

    def _refuse(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _dispatch

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # What http.server refuses before a request is parsed (414, 431, 505 ...), as JSON too.
        status = HTTPStatus(code)
        if self.request_version == "HTTP/0.9":
            self.request_version = self.protocol_version
        self._refuse(code, status.phrase.lower().replace(" ", "_"), message or status.description)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class ChatStreamServer(ThreadingHTTPServer):
    """`app` on `host:port`; port 0 picks a free one (`url` says which)."""

    daemon_threads = True

    def __init__(
        self, app: ChatStreamApp, *, host: str = "127.0.0.1", port: int = 8080, cors: CorsPolicy | None = None
    ) -> None:
        self.app = app
        self.cors = cors
        super().__init__((host, port), _RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serves in a background thread while the block runs."""
        thread = threading.Thread(target=self.serve_forever, name="pai-chat-stream", daemon=True)
        thread.start()
        try:
            yield self.url
        finally:
            self.shutdown()
            thread.join()
            self.server_close()


def main(argv: list[str] | None = None) -> None:
    """`python -m handlers.chat_stream_server` (run.sh): the server the Web Adapter proxies to."""
    parser = argparse.ArgumentParser(prog="handlers.chat_stream_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from handlers import _snapstart

    # Imported now, in the init phase (and, with SnapStart, into the snapshot), not on the first request.
    app = ChatStreamApp(
        chat_handler=_load("handlers.chat.handler"),
        authorizer_handler=_load("handlers.authorizer.handler"),
        timeout_seconds=args.timeout_seconds,
        snapstart_hooks=(_snapstart.before_snapshot, _snapstart.after_restore),
    )
    server = ChatStreamServer(app, host=args.host, port=args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
