"""API Gateway's side of an invocation, as both ways of serving PAI outside API Gateway need it: the
payload-2.0 event a route's function receives and the event its REQUEST authorizer receives.

Shared by the local gateway (pai_local/gateway.py, which emulates the HTTP API) and the streamed
chat's own HTTP adapter (handlers/chat_stream_server.py, which runs inside the Lambda function
behind its Function URL): the chat handler sees the same event whichever way a request came.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit


class RouteKey(Protocol):
    """What an event needs of a route: `POST /chat` is method "POST", path "/chat"."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


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
