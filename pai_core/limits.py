"""Per-user limits: requests per UTC minute and model tokens per UTC day.

So that a leaked key cannot run up a bill: API Gateway's throttling and the functions' reserved
concurrency bound the whole stack, these bound one user inside it.

Both are fixed windows over atomic counters (one `ADD` per count, no read-modify-write), keyed by
the user and the window they fall in. A fixed window lets a user reach up to twice the rate across
a window boundary (the end of one minute and the start of the next); that is the price of one
write per request, and still a bound. Requests refused for being over the rate are counted too: a
client hammering the API keeps its own window full.

The token budget is checked before a model call and charged after it, so concurrent calls can each
pass the check and together overshoot the day's budget by what they spend; the next call is
refused. 0 switches either limit off.

A request's count need not hold up the work that comes before any answer: `admitting()` sends the
`ADD` on a worker thread while the request goes on (a search embeds its query and refreshes its
index meanwhile), and the route waits for the verdict before it reads or stores anything of the
user's or answers. The count is the same single atomic write; only its wait overlaps other work.
An owner this container has refused in the current minute is counted first again, so a client
hammering past its limit gets no work done in parallel with its refusals.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from pai_core.errors import RateLimited, UpstreamUnavailable
from pai_core.ports import Clock, UsageCounters

log = logging.getLogger(__name__)

# Counts in flight at once, per container: a Lambda environment serves one request at a time; the
# local gateway serves a few side by side.
ADMISSION_WORKERS = 4
# Owners remembered as refused in their current minute (a bound on what that memory holds).
REFUSED_OWNERS_KEPT = 1024
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
# Counters outlive their window a little, then DynamoDB's TTL deletes them; nothing reads an old
# window again (its key names the window), so this only bounds what the table holds.
COUNTER_GRACE = timedelta(hours=1)


def request_counter(owner: str, window_start: datetime) -> str:
    return f"requests#{owner}#{window_start:%Y-%m-%dT%H:%M}"


def token_counter(owner: str, day_start: datetime) -> str:
    return f"tokens#{owner}#{day_start:%Y-%m-%d}"


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


class PendingAdmission:
    """A request's count on its way to the counter store. `wait()` returns once it has landed and
    admits the request, or raises what the count decided (RateLimited, or UpstreamUnavailable when
    the store could not be reached); every later `wait()` answers the same."""

    def __init__(self, outcome: Future[None] | None) -> None:
        self._outcome = outcome

    def wait(self) -> None:
        if self._outcome is not None:
            self._outcome.result()


class UsageLimits:
    def __init__(
        self, counters: UsageCounters, clock: Clock, *, requests_per_minute: int, daily_token_budget: int
    ) -> None:
        if requests_per_minute < 0 or daily_token_budget < 0:
            raise ValueError("limits are counts: 0 switches one off, negative means nothing")
        self._counters = counters
        self._clock = clock
        self._requests_per_minute = requests_per_minute
        self._daily_token_budget = daily_token_budget
        self._workers: ThreadPoolExecutor | None = None
        self._workers_lock = threading.Lock()
        self._refused_until: dict[str, datetime] = {}  # owner -> end of the minute they were refused in

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    def admit_request(self, owner: str) -> None:
        """Counts this request in the owner's current minute; RateLimited when that makes too many."""
        if self._requests_per_minute == 0:
            return
        self._count_request(owner, self._now())

    @contextmanager
    def admitting(self, owner: str) -> Iterator[PendingAdmission]:
        """Counts this request while the block runs. Inside, call `wait()` on what it yields before
        anything of the owner's is read or stored; on leaving, the verdict is awaited anyway, and a
        refusal (or a store that is down) replaces whatever else the block raised, as it would have
        had the count come first."""
        pending = self.start_request(owner)
        try:
            yield pending
        except BaseException:
            pending.wait()
            raise
        pending.wait()

    def start_request(self, owner: str) -> PendingAdmission:
        """Sends this request's count on a worker thread (with the caller's context, so the request's
        deadline bounds it) and returns at once; the request is counted in the minute it started."""
        if self._requests_per_minute == 0:
            return PendingAdmission(None)
        now = self._now()
        refused_until = self._refused_until.get(owner)
        if refused_until is not None and now < refused_until:
            self._count_request(owner, now)
            return PendingAdmission(None)
        context = contextvars.copy_context()
        return PendingAdmission(self._pool().submit(context.run, self._count_request, owner, now))

    def _pool(self) -> ThreadPoolExecutor:
        with self._workers_lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(ADMISSION_WORKERS, thread_name_prefix="pai-admission")
            return self._workers

    def _count_request(self, owner: str, now: datetime) -> None:
        window_start = now.replace(second=0, microsecond=0)
        window_end = window_start + MINUTE
        count = self._counters.add(request_counter(owner, window_start), 1, expires_at=window_end + COUNTER_GRACE)
        if count > self._requests_per_minute:
            self._remember_refused(owner, window_end, now)
            raise RateLimited(
                f"more than {self._requests_per_minute} requests in one minute",
                retry_after_seconds=_seconds_until(window_end, now),
                code="rate_limited",
            )

    def _remember_refused(self, owner: str, until: datetime, now: datetime) -> None:
        with self._workers_lock:
            if len(self._refused_until) >= REFUSED_OWNERS_KEPT:
                self._refused_until = {name: end for name, end in self._refused_until.items() if end > now}
                while len(self._refused_until) >= REFUSED_OWNERS_KEPT:
                    del self._refused_until[next(iter(self._refused_until))]
            self._refused_until[owner] = until

    def ensure_token_budget(self, owner: str) -> None:
        """Before a model call: RateLimited when the owner's tokens today already reach the budget."""
        if self._daily_token_budget == 0:
            return
        now = self._now()
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        used = self._counters.get(token_counter(owner, day_start))
        if used >= self._daily_token_budget:
            raise RateLimited(
                f"today's budget of {self._daily_token_budget} model tokens is spent",
                retry_after_seconds=_seconds_until(day_start + DAY, now),
                code="token_budget_exhausted",
            )

    def record_tokens(self, owner: str, tokens: int) -> None:
        """After a model call: charges what it spent (prompt and reply) to the owner's day.

        The tokens are spent whether or not this lands, so a storage failure here is logged rather
        than turned into an error that would make the caller ask (and pay) again."""
        if self._daily_token_budget == 0 or tokens <= 0:
            return
        now = self._now()
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            self._counters.add(token_counter(owner, day_start), tokens, expires_at=day_start + DAY + COUNTER_GRACE)
        except UpstreamUnavailable:
            log.warning("model tokens not charged to the daily budget: usage storage unavailable")
