"""Idempotent writes: a request repeated with the same `Idempotency-Key` by the same user within the
record's lifetime gets the first request's answer, and nothing is stored twice.

Powertools' idempotency utility does the bookkeeping (a conditional PutItem marks the key in
progress, the answer is recorded once the work is done, a failure removes the mark). What is ours:
- the record's key is a hash of (owner, scope, key): two users' equal keys never meet, and neither
  do one user's equal keys on two routes;
- the payload check is a hash of (owner, scope, body): the same key with another body is a conflict;
- the recorded answer is sealed under the owner's own key hierarchy (EnvelopeCipher), bound to owner,
  scope, key and purpose (SealedAnswers): the table never holds the plaintext of what a user stored or
  was told, and a forgotten user's records are unreadable once their keys are destroyed;
- Powertools' exceptions become domain errors (409 for a reused key or a request in progress, 503 when
  the idempotency table cannot be reached), never a 500.

Only successful answers are recorded: a request that failed can be sent again with the same key.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.serialization.base import BaseIdempotencySerializer

from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.deadline import remaining_seconds
from pai_core.errors import Conflict, InvalidInput, PaiError, UpstreamUnavailable

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 128
# Printable ASCII (space to tilde), not starting or ending with a space: HTTP drops those anyway.
KEY_PATTERN = rf"[\x21-\x7e]([\x20-\x7e]{{0,{MAX_KEY_CHARS - 2}}}[\x21-\x7e])?"
_KEY = re.compile(KEY_PATTERN)
RECORD_LIFETIME_SECONDS = 24 * 3600
# The record's key prefix (Powertools' "function name" part of the id); the same in every function.
KEY_PREFIX = "pai"
PURPOSE = "idempotent-response"
# A DynamoDB item holds 400 KB; a sealed answer past this is not kept (see SealedAnswers).
MAX_SEALED_BYTES = 256 * 1024
# Without a Lambda context, how long a request in progress holds its key before a repeat may run it.
DEFAULT_IN_PROGRESS_SECONDS = 60.0


def parse_idempotency_key(value: str | None) -> str | None:
    """The header's value, or None when it was not sent; InvalidInput naming the header otherwise."""
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise InvalidInput(
            f"'{IDEMPOTENCY_HEADER}' must be 1 to {MAX_KEY_CHARS} printable ASCII characters", field=IDEMPOTENCY_HEADER
        )
    return value


@dataclass(frozen=True)
class Answer:
    """What a request answered, as a repeat of it gets it back."""

    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class RequestInProgress(Conflict):
    """The first request with this key has not finished yet: try again shortly."""

    code = "request_in_progress"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class AnswerNotKept(Conflict):
    code = "idempotent_answer_unavailable"


class SealedAnswers(BaseIdempotencySerializer):
    """Powertools' output serializer for one request: the answer's body sealed under its owner's key,
    bound to owner, scope, idempotency key and purpose. Status and headers (content type) stay
    readable; they say nothing of the user's data.

    An answer whose sealed body would not fit in the record is kept without it: its repeat is told
    the first request succeeded (AnswerNotKept), rather than the first request failing afterwards."""

    FORMAT = 1

    def __init__(self, cipher: EnvelopeCipher, *, table: str, owner: str, scope: str, key: str) -> None:
        self._cipher = cipher
        self._context = RecordContext(
            partition={"table": table, "owner": owner},
            record={"scope": scope, "idempotencyKey": key, "purpose": PURPOSE},
        )

    def to_dict(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Answer):
            raise TypeError("only an Answer is recorded")
        sealed = self._cipher.encrypt(data.body.encode("utf-8"), self._context)
        record: dict[str, Any] = {"format": self.FORMAT, "status": data.status, "headers": dict(data.headers)}
        if len(sealed) <= MAX_SEALED_BYTES:
            record["sealed"] = base64.b64encode(sealed).decode("ascii")
        return record

    def from_dict(self, data: dict[str, Any]) -> Answer:
        if data.get("format") != self.FORMAT:
            raise ValueError("not a recorded answer")
        sealed = data.get("sealed")
        if sealed is None:
            raise AnswerNotKept(
                "the first request with this Idempotency-Key succeeded, but its answer was too large to keep"
            )
        body = self._cipher.decrypt(base64.b64decode(sealed), self._context).decode("utf-8")
        return Answer(status=int(data["status"]), body=body, headers=dict(data.get("headers") or {}))


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class _RemainingTime:
    """A stand-in Lambda context, for callers that have none: the request's deadline, or a default."""

    def get_remaining_time_in_millis(self) -> int:
        remaining = remaining_seconds()
        return int(1000 * (DEFAULT_IN_PROGRESS_SECONDS if remaining is None else max(0.0, remaining)))


class _NotRecorded(Exception):
    """Raised inside the idempotent call so that Powertools removes its mark and keeps nothing."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("an unsuccessful answer is not recorded")
        self.answer = answer


class IdempotentRequests:
    def __init__(
        self,
        persistence: BasePersistenceLayer,
        cipher: EnvelopeCipher,
        *,
        table: str,
        expires_after_seconds: int = RECORD_LIFETIME_SECONDS,
        retry_after_seconds: int = 2,
    ) -> None:
        self._persistence = persistence
        self._cipher = cipher
        self._table = table
        self._expires_after_seconds = expires_after_seconds
        self._retry_after_seconds = retry_after_seconds

    def run(
        self,
        owner: str,
        *,
        scope: str,
        key: str,
        body: Mapping[str, Any],
        work: Callable[[], Answer],
        lambda_context: object | None = None,
    ) -> Answer:
        """`work`'s answer, done once per (owner, scope, key) within the record's lifetime: a repeat
        with the same body gets the recorded answer, one with another body IdempotencyKeyReused."""
        context = lambda_context if hasattr(lambda_context, "get_remaining_time_in_millis") else _RemainingTime()
        config = IdempotencyConfig(
            event_key_jmespath="[owner, scope, key]",
            payload_validation_jmespath="[owner, scope, body]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self._expires_after_seconds,
            hash_function="sha256",
            lambda_context=context,  # type: ignore[arg-type]
        )
        serializer = SealedAnswers(self._cipher, table=self._table, owner=owner, scope=scope, key=key)
        done: list[Answer] = []

        def perform(request: dict[str, Any]) -> Answer:
            answer = work()
            if not 200 <= answer.status < 300:
                raise _NotRecorded(answer)
            done.append(answer)
            return answer

        idempotent = idempotent_function(
            perform,
            data_keyword_argument="request",
            persistence_store=self._persistence,
            config=config,
            output_serializer=serializer,
            key_prefix=KEY_PREFIX,
        )
        request = {"owner": owner, "scope": scope, "key": key, "body": json.loads(json.dumps(body))}
        try:
            answer: Answer = idempotent(request=request)
        except _NotRecorded as unsuccessful:
            return unsuccessful.answer
        except IdempotencyValidationError:
            raise IdempotencyKeyReused(
                f"this {IDEMPOTENCY_HEADER} was used with a different request: send a new key for a new request"
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise RequestInProgress(
                f"a request with this {IDEMPOTENCY_HEADER} is still in progress",
                retry_after_seconds=self._retry_after_seconds,
            ) from None
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as exc:
            if done:
                # The work is done and its answer is the caller's; only recording it failed. A repeat
                # finds the key in progress until that mark expires.
                return done[0]
            cause = exc.__cause__
            if isinstance(cause, PaiError):  # the request's deadline, say
                raise cause from exc
            raise UpstreamUnavailable("idempotency storage is unavailable") from exc
        return answer
