"""Metrics and traces around every entry point, so no handler forgets to flush.

Each decorator runs the handler, adds what the invocation itself says (an HTTP request's route and
outcome, an authorizer's verdict), and writes every metric counted during it (the domain's too:
index refreshes, KMS calls, model tokens) in one flush, returned or raised. Metrics go out as
CloudWatch embedded-metric-format lines on stdout (pai_core/adapters/metrics_emf.py), only where
PAI_METRICS_NAMESPACE is set (the stack sets it; the local stack does not, so its console stays
readable). Dimensions are route keys, status classes and error codes from a closed set: a value
that does not look like one is counted as "other", so nothing a caller sends becomes a metric.

X-Ray, when the stack's EnableTracing turns it on: Powertools' Tracer around the handler (its
boto3 calls become subsegments); built at the first invocation, never when tracing is off, so
aws_xray_sdk is not imported for nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from pai_core.ports import Metrics

Handler = Callable[[Any, LambdaContext], dict[str, Any]]
Recorder = Callable[[Metrics, Any, "dict[str, Any] | None"], None]

# What an API Gateway route key and one of our error codes look like; anything else is "other".
_ROUTE_KEY = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|ANY) /[A-Za-z0-9_/{}+-]{0,60}$|^\$default$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
OTHER = "other"


def _observed(handler: Handler, record: Recorder | None) -> Handler:
    traced: Handler | None = None

    @functools.wraps(handler)
    def wrapper(event: Any, context: LambdaContext) -> dict[str, Any]:
        nonlocal traced
        container = _container()
        if traced is None:
            traced = _traced(handler) if container is not None and container.settings.tracing else handler
        result: dict[str, Any] | None = None
        try:
            result = traced(event, context)
            return result
        finally:
            container = container or _container()
            if container is not None:
                _flush(container.metrics, record, event, result)

    return wrapper


def _flush(metrics: Any, record: Recorder | None, event: Any, result: dict[str, Any] | None) -> None:
    # Counting is never worth an answer: a failure here is logged, and the invocation's result stands.
    try:
        if record is not None:
            record(metrics, event, result)
        metrics.flush()
    except Exception:
        logging.getLogger(__name__).exception("metrics of this invocation were not written")


def _container() -> Any:
    """The process's container when it can be built; a handler whose configuration is broken
    fails on its own (and Lambda counts the error), with nothing to flush."""
    from pai_core.bootstrap import get_container
    from pai_core.config import ConfigError

    try:
        return get_container()
    except ConfigError:
        return None


def _traced(handler: Handler) -> Handler:
    from aws_lambda_powertools import Tracer

    tracer = Tracer(service="pai")
    traced: Handler = tracer.capture_lambda_handler(handler, capture_response=False)
    return traced


def observed_http(handler: Handler) -> Handler:
    """An API Gateway (HTTP API, payload 2.0) handler: counts `Requests` by route and outcome."""
    return _observed(handler, record_request)


def observed_queue(handler: Handler) -> Handler:
    """An SQS handler: its own outcome counts are the handler's; this flushes them."""
    return _observed(handler, None)


def observed_authorizer(handler: Handler) -> Handler:
    """The API key authorizer: counts `Authorizations` by outcome ("ok" or the failure's reason)."""
    return _observed(handler, record_authorization)


def record_request(metrics: Metrics, event: Any, response: dict[str, Any] | None) -> None:
    """`Requests` {route, status: "2xx"}; an error adds its code: {route, status: "4xx", code}.
    A handler that raised (nothing returned) is a 5xx "internal_error"."""
    raw_route = event.get("routeKey") if isinstance(event, dict) else None
    route = raw_route if isinstance(raw_route, str) and _ROUTE_KEY.match(raw_route) else OTHER
    if response is None:
        metrics.count("Requests", route=route, status="5xx", code="internal_error")
        return
    status = response.get("statusCode")
    status = status if isinstance(status, int) and 100 <= status <= 599 else 500
    if status < 400:
        metrics.count("Requests", route=route, status=f"{status // 100}xx")
    else:
        metrics.count("Requests", route=route, status=f"{status // 100}xx", code=_error_code(response))


def _error_code(response: dict[str, Any]) -> str:
    body = response.get("body")
    if not isinstance(body, str) or response.get("isBase64Encoded") or len(body) > 4096:
        return OTHER
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return OTHER
    return code if isinstance(code, str) and _CODE.match(code) else OTHER


def record_authorization(metrics: Metrics, event: Any, answer: dict[str, Any] | None) -> None:
    if answer is None:
        metrics.count("Authorizations", outcome="internal_error")
        return
    context = answer.get("context")
    failure = context.get("authError") if isinstance(context, dict) else None
    if failure is None:
        metrics.count("Authorizations", outcome="ok")
    else:
        metrics.count("Authorizations", outcome=failure if isinstance(failure, str) and _CODE.match(failure) else OTHER)
