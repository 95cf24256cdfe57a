"""The time a request has left, so that no call to a dependency starts what it cannot finish.

A Lambda function that runs past its timeout is killed mid-request: the caller gets API Gateway's
own 5xx instead of ours, and whatever was half done stays half done. Each call to AWS is bounded
(timeouts, a few attempts, capped backoff), but a request makes several in a row, so the bound
that matters is the request's: the handler sets a deadline from what the Lambda context says is
left, and every attempt and every wait for a retry is checked against it first (see
pai_core.adapters.aws_deadline). One that could not end in time is not started: the request fails
at once with a 503 and Retry-After, inside its timeout.

The deadline lives in a context variable: one per request, per thread; code that runs outside a
request (tests, scripts, the local harness setting up) has none and is not limited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from pai_core.errors import UpstreamUnavailable


@dataclass(frozen=True)
class Deadline:
    expires_at: float
    clock: Callable[[], float]

    def remaining(self) -> float:
        return self.expires_at - self.clock()


_current: ContextVar[Deadline | None] = ContextVar("pai_request_deadline", default=None)


@contextmanager
def request_deadline(seconds: float, *, clock: Callable[[], float] | None = None) -> Iterator[Deadline]:
    """Everything inside must be done within `seconds` from now (by `clock`, monotonic time by default)."""
    now = clock if clock is not None else time.monotonic
    deadline = Deadline(now() + seconds, now)
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def remaining_seconds() -> float | None:
    """Seconds the current request has left; None outside a request."""
    deadline = _current.get()
    return None if deadline is None else deadline.remaining()


def has_time_for(seconds: float) -> bool:
    remaining = remaining_seconds()
    return remaining is None or remaining >= seconds


def ensure_time_for(seconds: float, what: str) -> None:
    """UpstreamUnavailable when `what`, which may take `seconds`, could not finish in time."""
    if not has_time_for(seconds):
        raise UpstreamUnavailable(f"not enough time left in this request for {what}")
