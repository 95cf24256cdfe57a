"""Botocore's attempts and retries, bounded by the request's deadline (pai_core.deadline).

Botocore bounds one attempt (connect and read timeouts) and the number of attempts; between
attempts its standard retry mode waits an exponential backoff with jitter. Two event handlers on
each client hold that to the request's deadline: an attempt is sent only when a whole attempt still
fits, and a retry is made only when the longest wait before it plus a whole attempt fit. Otherwise
the call fails at once with UpstreamUnavailable (a 503 with Retry-After), while the function can
still answer.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config

from pai_core.deadline import has_time_for
from pai_core.errors import UpstreamUnavailable

# Botocore's standard retry mode waits at most min(base * 2 ** (n - 1), 20) seconds after attempt n,
# the base being 1 s for throttling (less for other errors), and up to 5 s more when the service
# asks for it (x-amz-retry-after). tests/unit/test_faults.py checks these against botocore.
THROTTLING_BACKOFF_BASE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 20.0
RETRY_AFTER_EXTRA_SECONDS = 5.0


def longest_backoff(attempts_made: int) -> float:
    """The longest botocore waits before the attempt after `attempts_made` attempts."""
    exponential = THROTTLING_BACKOFF_BASE_SECONDS * 2.0 ** (attempts_made - 1)
    return min(exponential, MAX_BACKOFF_SECONDS) + RETRY_AFTER_EXTRA_SECONDS


def attempt_seconds(config: Config) -> float:
    """The longest one attempt takes: connecting, then waiting for the answer."""
    # Config's stubs leave its options undeclared.
    connect: float = getattr(config, "connect_timeout")  # noqa: B009
    read: float = getattr(config, "read_timeout")  # noqa: B009
    return connect + read


def max_attempts(config: Config) -> int:
    retries: dict[str, Any] = getattr(config, "retries", None) or {}
    return int(retries["total_max_attempts"])


def worst_case_call_seconds(config: Config) -> float:
    """The longest one call takes without a deadline: every attempt timing out, every wait at its longest."""
    attempts = max_attempts(config)
    return attempts * attempt_seconds(config) + sum(longest_backoff(n) for n in range(1, attempts))


def bound_by_request_deadline(client: Any, *, seconds_per_attempt: float) -> None:
    """Registers the two handlers on `client` (a boto3 client)."""
    service_model = client.meta.service_model
    service = service_model.service_id.hyphenize()
    name = service_model.service_id

    def refuse_late_attempt(**_: Any) -> None:
        # Raised inside botocore's send: its retry handler does not retry a domain error, so this
        # reaches the adapter unchanged.
        if not has_time_for(seconds_per_attempt):
            raise UpstreamUnavailable(f"not enough time left in this request for a {name} call")

    def veto_late_retry(attempts: int, **_: Any) -> bool | None:
        if has_time_for(longest_backoff(attempts) + seconds_per_attempt):
            return None  # botocore's own retry policy decides
        return False  # no retry: the last answer or error stands

    events = client.meta.events
    events.register(f"before-send.{service}", refuse_late_attempt, unique_id=f"pai-deadline-send-{service}")
    # First, so that its "no" is the answer botocore acts on.
    events.register_first(f"needs-retry.{service}", veto_late_retry, unique_id=f"pai-deadline-retry-{service}")
