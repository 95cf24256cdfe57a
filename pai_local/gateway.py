"""A local stand-in for API Gateway's HTTP API: each request becomes a payload-v2.0 event for the
handler that infra/template.yaml routes it to, like `sam local start-api`.

Routes with a Lambda REQUEST authorizer run it first, in-process, with the v2 authorizer event, and
cache its answer per identity value (the Authorization header) for the template's TTL, as API
Gateway does; the answer's context reaches the function as `requestContext.authorizer.lambda`. One
difference: API Gateway answers a request without the identity header itself (401
`{"message":"Unauthorized"}`); this gateway passes it on without authorizer context, and the
function answers with PAI's own 401.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pai_local.template import Authorizer, Route

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
# Lambda's own limit on a synchronous invocation's request payload.
MAX_INVOKE_PAYLOAD_BYTES = 6 * 1024 * 1024
log = logging.getLogger("pai_local.gateway")


class OneInvocationAtATime:
    """Lambda gives each execution environment one request at a time, and the handlers rely on it:
    Powertools keeps the event being resolved, and the Lambda context, in class-level state
    (BaseRouter.current_event) that every resolver in the process shares. Two requests resolved at
    once in one process read each other's event: one user's request could run as another user. So
    the gateway invokes one function at a time, process-wide. A function that streams its response
    lets the next one in once its status line is out: from then on it writes only to its own
    stream."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._held = False

    def __enter__(self) -> OneInvocationAtATime:
        self._lock.acquire()
        self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class ChunkedResponseStream:
    """A response stream for handlers that can write as they go (chat with "stream": true): the
    status and headers go out on start(), each write() as one HTTP/1.1 chunk, flushed at once."""

    def __init__(self, request: BaseHTTPRequestHandler, *, on_start: Callable[[], None] = lambda: None) -> None:
        self._request = request
        self._on_start = on_start
        self.started = False

    def start(self, status: int, headers: dict[str, str]) -> None:
        self._request.send_response(status)
        for name, value in headers.items():
            self._request.send_header(name, value)
        self._request.send_header("transfer-encoding", "chunked")
        self._request.end_headers()
        self.started = True
        self._on_start()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        if data:
            self._request.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self._request.wfile.flush()

    def close(self) -> None:
        self._request.wfile.write(b"0\r\n\r\n")
        self._request.wfile.flush()


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read, and a response
    stream, like the one Lambda's response streaming gives a function."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: float = 60.0
    response_stream: ChunkedResponseStream | None = None

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(dotted: str) -> LambdaHandler:
    module_name, function_name = dotted.rsplit(".", 1)
    handler: LambdaHandler = getattr(importlib.import_module(module_name), function_name)
    return handler


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._by_key = {(route.method, route.path): route for route in routes}
        self._handlers: dict[str, LambdaHandler] = {}

    def find(self, method: str, path: str) -> Route | None:
        return self._by_key.get((method, path))

    def methods_for(self, path: str) -> list[str]:
        return sorted(method for method, route_path in self._by_key if route_path == path)

    def handler(self, route: Route) -> LambdaHandler:
        return self.function(route.handler)

    def function(self, dotted: str) -> LambdaHandler:
        if dotted not in self._handlers:
            self._handlers[dotted] = load_handler(dotted)
        return self._handlers[dotted]


class AuthorizerCache:
    """API Gateway's cache of authorizer answers: per authorizer and identity value, for the
    authorizer's TTL (or `ttl_override`: 0 turns caching off). Entries are keyed by a digest of the
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


def build_event(
    route: Route,
    *,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    source_ip: str,
    authorizer_context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    url = urlsplit(target)
    now = time.time()
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{route.method} {route.path}",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{route.method} {route.path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if url.query:
        event["queryStringParameters"] = dict(parse_qsl(url.query, keep_blank_values=True))
    if body:
        event["body"] = text
    if authorizer_context is not None:
        event["requestContext"]["authorizer"] = {"lambda": authorizer_context}
    return event


def build_authorizer_event(
    route: Route, *, method: str, target: str, headers: dict[str, str], identity: str, source_ip: str
) -> dict[str, Any]:
    """The payload-2.0 event of a REQUEST authorizer: the request without its body, the identity
    source's values and the route's ARN."""
    request = build_event(route, method=method, target=target, headers=headers, body=b"", source_ip=source_ip)
    context = request["requestContext"]
    route_arn = (
        f"arn:aws:execute-api:us-east-1:{context['accountId']}:{context['apiId']}/{context['stage']}"
        f"/{method}{request['rawPath']}"
    )
    event: dict[str, Any] = {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": route_arn,
        "identitySource": [identity],
        "routeKey": request["routeKey"],
        "rawPath": request["rawPath"],
        "rawQueryString": request["rawQueryString"],
        "headers": headers,
        "requestContext": context,
        "pathParameters": {},
        "stageVariables": {},
    }
    if "queryStringParameters" in request:
        event["queryStringParameters"] = request["queryStringParameters"]
    return event


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def make_request_handler(routes: RouteTable, authorizer_cache: AuthorizerCache) -> type[BaseHTTPRequestHandler]:
    class GatewayRequestHandler(BaseHTTPRequestHandler):
        server_version = "pai-local-gateway"
        protocol_version = "HTTP/1.1"

        def __getattr__(self, name: str) -> Any:
            # http.server looks up do_<METHOD>; every method goes through the route table, so an
            # unknown one gets a JSON 404 or 405 rather than http.server's 501 HTML page.
            if name.startswith("do_"):
                return self._dispatch
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            route = routes.find(self.command, path)
            length = int(self.headers.get("content-length") or 0)
            if route is None:
                self._drain(length)
                allowed = routes.methods_for(path)
                if allowed:
                    self._send(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        {"content-type": "application/json", "allow": ", ".join(allowed)},
                        _error_body("method_not_allowed", f"{path} takes {', '.join(allowed)}"),
                    )
                    return
                self._send(
                    HTTPStatus.NOT_FOUND,
                    {"content-type": "application/json"},
                    _error_body("route_not_found", "no such route"),
                )
                return
            if length > MAX_INVOKE_PAYLOAD_BYTES:
                self.close_connection = True
                self._send(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {"content-type": "application/json"},
                    _error_body("payload_too_large", "request body is too large"),
                )
                return
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            authorizer_context = None
            if route.authorizer is not None and headers.get(route.authorizer.identity_header):
                authorizer_context = self._authorize(route, route.authorizer, headers)
                if authorizer_context is None:
                    return
            event = build_event(
                route,
                method=self.command,
                target=self.path,
                headers=headers,
                body=body,
                source_ip=self.client_address[0],
                authorizer_context=authorizer_context,
            )
            with OneInvocationAtATime() as invocation:
                stream = ChunkedResponseStream(self, on_start=invocation.release)
                context = LocalLambdaContext(function_name=route.handler.split(".")[1], response_stream=stream)
                try:
                    result = routes.handler(route)(event, context)
                except Exception as exc:
                    failure: Exception | None = exc
                else:
                    failure = None
            if failure is not None:
                log.error("handler %s failed", route.handler, exc_info=failure)
                if stream.started:
                    self.close_connection = True  # a chunked body cut short: the client sees it end
                    return
                # What API Gateway does when the function itself fails.
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {"content-type": "application/json"},
                    _error_body("internal_error", "Something went wrong on our side."),
                )
                return
            if stream.started:
                stream.close()
            else:
                self._send_proxy_result(result)

        def _authorize(self, route: Route, authorizer: Authorizer, headers: dict[str, str]) -> dict[str, Any] | None:
            """The authorizer's context for the request; None when the request was answered here
            instead (403 for a denial, 500 when the authorizer failed), as API Gateway does."""
            identity = headers[authorizer.identity_header]
            answer = authorizer_cache.get(authorizer, identity)
            if answer is None:
                event = build_authorizer_event(
                    route,
                    method=self.command,
                    target=self.path,
                    headers=headers,
                    identity=identity,
                    source_ip=self.client_address[0],
                )
                context = LocalLambdaContext(function_name=authorizer.handler.split(".")[1], timeout_seconds=10.0)
                try:
                    with OneInvocationAtATime():
                        answer = routes.function(authorizer.handler)(event, context)
                    if not isinstance(answer, dict) or not isinstance(answer.get("isAuthorized"), bool):
                        raise TypeError("an authorizer's simple response needs a boolean isAuthorized")
                except Exception:
                    log.exception("authorizer %s failed", authorizer.handler)
                    self._send(
                        HTTPStatus.INTERNAL_SERVER_ERROR,
                        {"content-type": "application/json"},
                        json.dumps({"message": "Internal Server Error"}).encode(),
                    )
                    return None
                authorizer_cache.put(authorizer, identity, answer)
            if not answer["isAuthorized"]:
                self._send(
                    HTTPStatus.FORBIDDEN,
                    {"content-type": "application/json"},
                    json.dumps({"message": "Forbidden"}).encode(),
                )
                return None
            return dict(answer.get("context") or {})

        def _drain(self, length: int) -> None:
            if 0 < length <= MAX_INVOKE_PAYLOAD_BYTES:
                self.rfile.read(length)
            elif length:
                self.close_connection = True

        def _send_proxy_result(self, result: dict[str, Any]) -> None:
            raw_body = result.get("body") or ""
            payload = base64.b64decode(raw_body) if result.get("isBase64Encoded") else str(raw_body).encode("utf-8")
            headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
            for name, values in (result.get("multiValueHeaders") or {}).items():
                headers[str(name).lower()] = ", ".join(str(v) for v in values)
            self._send(int(result.get("statusCode", 200)), headers, payload, cookies=result.get("cookies") or [])

        def _send(self, status: int, headers: dict[str, str], body: bytes, cookies: Iterable[str] = ()) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name not in {"content-length", "connection", "transfer-encoding"}:
                    self.send_header(name, value)
            for cookie in cookies:
                self.send_header("set-cookie", cookie)
            self.send_header("content-length", str(len(body)))
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(body)

    return GatewayRequestHandler


class LocalGateway:
    def __init__(self, routes: Iterable[Route], *, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.authorizer_cache = AuthorizerCache()
        self._server = ThreadingHTTPServer(
            (host, port), make_request_handler(RouteTable(routes), self.authorizer_cache)
        )
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def clear_authorizer_cache(self) -> None:
        """Forget every cached authorizer answer, as if their TTL had passed (a revocation shows at once)."""
        self.authorizer_cache.clear()

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="pai-gateway", daemon=True)
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
