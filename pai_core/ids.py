"""Time-ordered ids: 48 bits of creation milliseconds, then 80 random bits, as 32 hex characters.

Memories and their tombstones use them, so a key-range Query (`id > :watermark`) finds everything
made after a moment without reading anything older."""

from __future__ import annotations

import os
import threading
from datetime import datetime

ID_HEX_CHARS = 32
_MILLIS_HEX_CHARS = 12
_RANDOM_HEX_CHARS = ID_HEX_CHARS - _MILLIS_HEX_CHARS


class MemoryIds:
    """Like a ULID: unique, and sorting by id sorts by age. Within one millisecond the random part
    counts up, so ids made by one container stay in order."""

    def __init__(self) -> None:
        self._last = (-1, 0)
        self._lock = threading.Lock()

    def __call__(self, created_at: datetime) -> str:
        millis = int(created_at.timestamp() * 1000)
        with self._lock:
            last_millis, last_random = self._last
            if millis <= last_millis:
                millis, random_part = last_millis, last_random + 1
            else:
                random_part = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
            self._last = (millis, random_part)
        return f"{millis:012x}{random_part:020x}"


def id_millis(time_ordered_id: str) -> int | None:
    """The creation milliseconds of a time-ordered id; None for anything else."""
    if len(time_ordered_id) != ID_HEX_CHARS:
        return None
    try:
        return int(time_ordered_id[:_MILLIS_HEX_CHARS], 16)
    except ValueError:
        return None


def lowest_id_at(millis: int) -> str:
    """The smallest id a moment can have: every id made at or after `millis` sorts above it."""
    return f"{max(millis, 0):012x}" + "0" * _RANDOM_HEX_CHARS
