"""What goes on the learning queue: a reference to the user's turn, never its words.

The turn itself stays sealed in the conversations table; the learning function reads it from there
by owner, session and time, so the queue (and its dead-letter queue) never holds what the user said."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pai_core.requests import SESSION_ID_PATTERN

_OWNER_MAX = 128


class InvalidJob(ValueError):
    """A queue message that is not a learning job: dropped, never retried."""


@dataclass(frozen=True)
class LearningJob:
    owner: str
    session_id: str
    turn_at: datetime  # when the user's turn was stored (its key in the conversations table)

    @property
    def turn_micros(self) -> int:
        return int(self.turn_at.timestamp() * 1_000_000)

    def to_json(self) -> str:
        return json.dumps(
            {"v": 1, "owner": self.owner, "sessionId": self.session_id, "turnAt": self.turn_micros},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, body: str) -> LearningJob:
        try:
            data = json.loads(body)
            owner, session_id, micros = data["owner"], data["sessionId"], data["turnAt"]
        except (ValueError, TypeError, KeyError):
            raise InvalidJob("not a learning job") from None
        valid = (
            data.get("v") == 1
            and isinstance(owner, str)
            and 0 < len(owner) <= _OWNER_MAX
            and "#" not in owner
            and isinstance(session_id, str)
            and SESSION_ID_PATTERN.match(session_id) is not None
            and isinstance(micros, int)
            and micros > 0
        )
        if not valid:
            raise InvalidJob("not a learning job")
        return cls(owner, session_id, datetime.fromtimestamp(micros / 1_000_000, UTC))


class LearningQueue(Protocol):
    def send(self, job: LearningJob) -> None:
        """Hand the job to the learning function (UpstreamUnavailable when that cannot be done)."""
        ...
