"""Turn botocore failures into domain errors, in one place for every AWS adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from pai_core.errors import UpstreamUnavailable

_RETRYABLE_CODES = {
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSInternalException",
    "KeyUnavailableException",
    "DependencyTimeoutException",
    "SlowDown",
    # The key exists no longer, or not usably: a misconfigured or decommissioned deployment, not
    # the caller's fault; nothing is written, and it heals when the key is back.
    "NotFoundException",
    "DisabledException",
    "KMSInvalidStateException",
}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated_aws_errors(service: str) -> Iterator[None]:
    """Anything the caller may retry later becomes UpstreamUnavailable; botocore has already
    retried with backoff by then (see bootstrap's client config). Other ClientErrors propagate to
    the adapter, which knows what they mean."""
    try:
        yield
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = error_code(exc)
        if code in _RETRYABLE_CODES or status >= 500 or code == "ResourceNotFoundException":
            raise UpstreamUnavailable(f"{service} is unavailable ({code or status})") from exc
        raise
    except BotoCoreError as exc:  # connection refused, timeouts, endpoint resolution
        raise UpstreamUnavailable(f"{service} cannot be reached") from exc
