"""API Gateway's side of an invocation, as both ways of serving PAI outside API Gateway need it: the
payload-2.0 event a route's function receives, the event its REQUEST authorizer receives, and the
cache of authorizer answers per identity value.

Shared by the local gateway (pai_local/gateway.py, which emulates the HTTP API) and the streamed
chat's own HTTP adapter (handlers/chat_stream_server.py, which runs inside the Lambda function
behind its Function URL): the chat handler sees the same event whichever way a request came.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit


class RouteKey(Protocol):
    """What an event needs of a route: `POST /chat` is method "POST", path "/chat"."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


class CachePolicy(Protocol):
    """What the cache needs of an authorizer: its name (entries are per authorizer) and its TTL."""

    @property
    def name(self) -> str: ...

    @property
    def ttl_seconds(self) -> int: ...


class AuthorizerCache:
    """API Gateway's cache of authorizer answers: per authorizer and identity value, for the
    authorizer's TTL (or `ttl_override`: 0 turns caching off). Entries are keyed by a digest of the
    value, so no API key stays in memory, and the oldest go first past `max_entries`."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, dict[str, Any]]] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self.ttl_override: int | None = None

    def get(self, authorizer: CachePolicy, identity: str) -> dict[str, Any] | None:
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

    def put(self, authorizer: CachePolicy, identity: str, answer: dict[str, Any]) -> None:
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


def _cache_key(authorizer: CachePolicy, identity: str) -> tuple[str, bytes]:
    return authorizer.name, hashlib.sha256(identity.encode("utf-8", "surrogateescape")).digest()


def build_event(
    route: RouteKey,
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
    route: RouteKey, *, method: str, target: str, headers: dict[str, str], identity: str, source_ip: str
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
