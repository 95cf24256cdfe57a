"""A local stand-in for API Gateway's HTTP API: each request becomes a payload-v2.0 event for the
handler that infra/template.yaml routes it to, like `sam local start-api`."""

from __future__ import annotations

import base64
import importlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pai_local.template import Route

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
# Lambda's own limit on a synchronous invocation's request payload.
MAX_INVOKE_PAYLOAD_BYTES = 6 * 1024 * 1024
log = logging.getLogger("pai_local.gateway")


class ChunkedResponseStream:
    """A response stream for handlers that can write as they go (chat with "stream": true): the
    status and headers go out on start(), each write() as one HTTP/1.1 chunk, flushed at once."""

    def __init__(self, request: BaseHTTPRequestHandler) -> None:
        self._request = request
        self.started = False

    def start(self, status: int, headers: dict[str, str]) -> None:
        self._request.send_response(status)
        for name, value in headers.items():
            self._request.send_header(name, value)
        self._request.send_header("transfer-encoding", "chunked")
        self._request.end_headers()
        self.started = True

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
        if route.handler not in self._handlers:
            self._handlers[route.handler] = load_handler(route.handler)
        return self._handlers[route.handler]


def build_event(
    route: Route, *, method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str
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
    return event


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def make_request_handler(routes: RouteTable) -> type[BaseHTTPRequestHandler]:
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
            event = build_event(
                route,
                method=self.command,
                target=self.path,
                headers=headers,
                body=body,
                source_ip=self.client_address[0],
            )
            stream = ChunkedResponseStream(self)
            context = LocalLambdaContext(function_name=route.handler.split(".")[1], response_stream=stream)
            try:
                result = routes.handler(route)(event, context)
            except Exception:
                log.exception("handler %s failed", route.handler)
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
        self._server = ThreadingHTTPServer((host, port), make_request_handler(RouteTable(routes)))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="pai-gateway", daemon=True)
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
