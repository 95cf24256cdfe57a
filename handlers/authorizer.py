"""The API key authorizer: API Gateway HTTP API, REQUEST type, payload format 2.0, simple responses,
identity source `$request.header.Authorization`.

It never denies. An HTTP API answers a denial with its own 403 `{"message": "Forbidden"}`, while
the API promises a 401 with PAI's error body. So every answer is `isAuthorized: true`, carrying
either the user (`userId`, `keyId`) or why there is none (`authError`); the function refuses the
request (handlers/_http.authenticated_owner) before it reads or writes anything.

API Gateway caches none of its answers (TTL 0): an HTTP API cannot cache one answer and not another,
and "the key store is unavailable" must not outlive the outage. Good answers are remembered here
instead, per container, for PAI_AUTH_CACHE_SECONDS (pai_core.auth.KnownKeys). A value that is not
shaped like a PAI key is refused before the container is even built: no client, no table read.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerResponseV2,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import RESPONSE_MARGIN_SECONDS
from handlers._observability import observed_authorizer
from pai_core.auth import ApiKeyRejected, AuthFailure, parse_bearer
from pai_core.bootstrap import get_container
from pai_core.deadline import request_deadline
from pai_core.errors import UpstreamUnavailable

logger = Logger(service="pai")


# The event holds the caller's API key: it is never logged (nor counted: only the verdict is).
@observed_authorizer
@logger.inject_lambda_context(log_event=False)
@event_source(data_class=APIGatewayAuthorizerEventV2)
def handler(event: APIGatewayAuthorizerEventV2, context: LambdaContext) -> dict[str, Any]:
    authorization = _authorization(event)
    try:
        parse_bearer(authorization)  # the shape alone: malformed values never cost a table read
        # The same bound as the functions': a key check that cannot finish in time is "unavailable".
        with request_deadline(context.get_remaining_time_in_millis() / 1000 - RESPONSE_MARGIN_SECONDS):
            principal = get_container().api_keys.identify(authorization)
    except ApiKeyRejected as exc:
        return _answer({"authError": exc.reason.value})
    except UpstreamUnavailable as exc:
        # Remembered nowhere (API Gateway caches nothing; KnownKeys only good keys): the next request
        # asks again. botocore has retried already.
        logger.warning("API keys cannot be checked", extra={"reason": exc.message})
        return _answer({"authError": AuthFailure.UNAVAILABLE.value})
    return _answer({"userId": principal.user_id, "keyId": principal.key_id})


def _authorization(event: APIGatewayAuthorizerEventV2) -> str | None:
    if not event.get("headers"):
        return None
    value: str | None = event.headers.get("authorization")
    return value


def _answer(context: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = APIGatewayAuthorizerResponseV2(authorize=True, context=context).asdict()
    return response
