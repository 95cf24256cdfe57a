"""The Metrics port in CloudWatch's embedded metric format, through Powertools' EMF provider.

Counts are added up in memory and written by `flush()`, once per invocation (handlers/_observability.py):
one JSON line on stdout per distinct set of dimensions, which Lambda sends to the function's log
group and CloudWatch turns into metrics (no PutMetricData call, no extra permission). Every line
also carries the `service` dimension.

Only the dimension names below are accepted: a metric per user (a user id as a dimension) would
be a privacy leak and a bill, so a name not in the list is a programming error, raised at once.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

DIMENSION_NAMES = frozenset({"route", "status", "code", "kind", "operation", "outcome", "purpose"})
# CloudWatch's bound is 30 per metric; ours are never near it, and a value this long is not one of our words.
MAX_DIMENSIONS = 4
MAX_DIMENSION_VALUE = 64

Dimensions = tuple[tuple[str, str], ...]


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class EmfMetrics:
    def __init__(self, namespace: str, *, service: str = "pai", emit: Callable[[str], None] = _stdout) -> None:
        if not namespace:
            raise ValueError("a metrics namespace is required")
        self.namespace = namespace
        self.service = service
        self._emit = emit
        self._pending: dict[Dimensions, Counter[str]] = {}
        self._lock = threading.Lock()

    def count(self, name: str, value: int = 1, /, **dimensions: str) -> None:
        key = _dimensions(dimensions)
        with self._lock:
            self._pending.setdefault(key, Counter())[name] += value

    def flush(self) -> None:
        """Write what was counted since the last flush; nothing when nothing was."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for dimensions, counts in pending.items():
            # A fresh provider per line: Powertools' Metrics is a process-wide singleton with one
            # dimension set, and these lines have one each.
            provider = EphemeralMetrics(namespace=self.namespace, service=self.service)
            for dimension, value in dimensions:
                provider.add_dimension(name=dimension, value=value)
            for name, total in sorted(counts.items()):
                provider.add_metric(name=name, unit=MetricUnit.Count, value=total)
            self._emit(json.dumps(provider.serialize_metric_set(), separators=(",", ":")))


def _dimensions(dimensions: dict[str, str]) -> Dimensions:
    if len(dimensions) > MAX_DIMENSIONS:
        raise ValueError(f"at most {MAX_DIMENSIONS} dimensions per metric")
    for name, value in dimensions.items():
        if name not in DIMENSION_NAMES:
            raise ValueError(f"{name!r} is not a metric dimension (one of {', '.join(sorted(DIMENSION_NAMES))})")
        if not isinstance(value, str) or not 0 < len(value) <= MAX_DIMENSION_VALUE:
            raise ValueError(f"dimension {name!r} needs a short text value")
    return tuple(sorted(dimensions.items()))
