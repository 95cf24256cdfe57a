"""The learning function: reads chat turns for durable facts, off the request path.

Its events come from the learning queue (SQS, through an event source mapping in AWS, through the
local harness's poller locally). Each message names one user turn by reference (owner, session, the
turn's time); the turn itself is read, sealed, from the conversations table. A message that fails
is reported back (partial batch response) and delivered again later, up to the queue's limit, then
kept in its dead-letter queue; a message that is not a learning job is dropped. Nothing the user
said is logged: counts only.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import logger
from handlers._observability import observed_queue
from handlers._queue import partial_batch_response
from pai_core.bootstrap import get_container
from pai_core.learning.jobs import InvalidJob, LearningJob
from pai_core.learning.service import TurnOutcome
from pai_core.ports import Metrics


def learn(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The batch item failures: the messages to deliver again."""
    container = get_container()
    learning = container.learning
    metrics = container.metrics
    failures: list[dict[str, str]] = []
    for record in records:
        try:
            job = LearningJob.from_json(str(record.get("body", "")))
        except InvalidJob:
            logger.warning("learning: dropped a message that is not a learning job")
            metrics.count("LearningTurns", outcome="invalid")
            continue
        try:
            outcome = learning.learn_turn(job)
        except Exception as exc:
            logger.warning("learning: turn not learned, to be retried", extra={"error": type(exc).__name__})
            failures.append({"itemIdentifier": str(record.get("messageId", ""))})
            metrics.count("LearningTurns", outcome="failed")
            continue
        count_learned(metrics, outcome)
        logger.info(
            "learning: turn read",
            extra={
                "added": len(outcome.added),
                "updated": len(outcome.updated),
                "unchanged": outcome.unchanged,
                "dropped": outcome.dropped,
                "tokens": outcome.tokens,
                "skipped": outcome.skipped,
            },
        )
    return failures


def count_learned(metrics: Metrics, outcome: TurnOutcome) -> None:
    """`LearningTurns` {outcome: learned | skipped}, and what a read turn did to memories:
    `LearnedMemories` {outcome: stored | updated | unchanged | dropped}."""
    metrics.count("LearningTurns", outcome="skipped" if outcome.skipped is not None else "learned")
    for kind, amount in (
        ("stored", len(outcome.added)),
        ("updated", len(outcome.updated)),
        ("unchanged", outcome.unchanged),
        ("dropped", outcome.dropped),
    ):
        if amount:
            metrics.count("LearnedMemories", amount, outcome=kind)


@observed_queue
@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return partial_batch_response(event, context, learn)
