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
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from pai_core.errors import RateLimited, UpstreamUnavailable
from pai_core.ports import Clock, UsageCounters

log = logging.getLogger(__name__)

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

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    def admit_request(self, owner: str) -> None:
        """Counts this request in the owner's current minute; RateLimited when that makes too many."""
        if self._requests_per_minute == 0:
            return
        now = self._now()
        window_start = now.replace(second=0, microsecond=0)
        window_end = window_start + MINUTE
        count = self._counters.add(request_counter(owner, window_start), 1, expires_at=window_end + COUNTER_GRACE)
        if count > self._requests_per_minute:
            raise RateLimited(
                f"more than {self._requests_per_minute} requests in one minute",
                retry_after_seconds=_seconds_until(window_end, now),
                code="rate_limited",
            )

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
