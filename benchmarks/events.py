"""API Gateway v2 events as Lambda receives them, from the recorded one the handler tests use."""

from __future__ import annotations

import copy
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

RECORDED_EVENT = Path(__file__).resolve().parents[1] / "tests" / "unit" / "events" / "apigw_v2_post.json"


@cache
def _recorded() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(RECORDED_EVENT.read_text(encoding="utf-8"))
    return event


def api_event(route: str, body: dict[str, Any], *, user: str) -> dict[str, Any]:
    """The recorded event with route ("POST /search"), path and JSON body replaced, as API Gateway
    passes it on once the API key authorizer has identified `user`."""
    method, path = route.split(" ", 1)
    raw = json.dumps(body)
    event = copy.deepcopy(_recorded())
    event["routeKey"] = event["requestContext"]["routeKey"] = route
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["requestId"] = uuid.uuid4().hex[:16]
    event["body"] = raw
    event["requestContext"]["authorizer"] = {"lambda": {"userId": user, "keyId": "bench"}}
    event["headers"]["content-length"] = str(len(raw.encode("utf-8")))
    return event


class FakeLambdaContext:
    """What Powertools' `inject_lambda_context` reads of Lambda's context."""

    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:pai-bench"

    def __init__(self, function_name: str = "pai-bench", *, remaining_millis: int = 60_000) -> None:
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())
        self._remaining_millis = remaining_millis

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_millis
