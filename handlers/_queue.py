"""What the queue-driven functions share: SQS records in, a partial batch response out, within the
invocation's time (less the margin every handler keeps for its answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import RESPONSE_MARGIN_SECONDS
from pai_core.deadline import request_deadline

Record = dict[str, Any]
BatchItemFailure = dict[str, str]


def partial_batch_response(
    event: dict[str, Any], context: LambdaContext, process: Callable[[list[Record]], list[BatchItemFailure]]
) -> dict[str, Any]:
    """`process` returns the messages to deliver again (`{"itemIdentifier": messageId}`)."""
    records = [record for record in event.get("Records") or [] if isinstance(record, dict)]
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return {"batchItemFailures": process(records)}
    with request_deadline(remaining() / 1000 - RESPONSE_MARGIN_SECONDS):
        return {"batchItemFailures": process(records)}


def delivery_count(record: Record) -> int:
    """How many times SQS has handed this message out, this time included."""
    try:
        return int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1
