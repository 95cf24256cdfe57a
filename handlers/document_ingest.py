"""The document ingest function: reads large uploads off the request path.

Its events come from the documents queue (SQS, through an event source mapping in AWS, through the
local harness's poller locally). Each message names one accepted upload by reference (owner, document
id); the file itself is read, sealed, from the bucket. A message that fails is reported back (partial
batch response) and delivered again later; at its last delivery (the queue's maxReceiveCount, as
PAI_DOCUMENTS_INGEST_ATTEMPTS) a failure marks the document failed instead, so no document stays
"processing" for ever. A message that is not an ingestion job is dropped. Nothing of a document is
logged: counts and outcomes only.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import logger
from handlers._observability import observed_queue
from handlers._queue import delivery_count, partial_batch_response
from pai_core.bootstrap import get_container
from pai_core.documents.jobs import IngestJob, InvalidIngestJob

GAVE_UP = "the document could not be read: PAI gave up after several attempts"


def ingest(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The batch item failures: the messages to deliver again."""
    container = get_container()
    documents = container.documents
    attempts = container.settings.documents_ingest_attempts
    metrics = container.metrics
    failures: list[dict[str, str]] = []
    for record in records:
        try:
            job = IngestJob.from_json(str(record.get("body", "")))
        except InvalidIngestJob:
            logger.warning("ingest: dropped a message that is not an ingestion job")
            metrics.count("DocumentIngestions", outcome="invalid")
            continue
        try:
            outcome = documents.ingest(job)
        except Exception as exc:
            if delivery_count(record) < attempts:
                logger.warning("ingest: document not read, to be retried", extra={"error": type(exc).__name__})
                failures.append({"itemIdentifier": str(record.get("messageId", ""))})
                metrics.count("DocumentIngestions", outcome="retry")
                continue
            logger.warning("ingest: document not read at its last attempt", extra={"error": type(exc).__name__})
            try:
                outcome = documents.fail(job, GAVE_UP)
            except Exception as again:
                logger.warning("ingest: document not marked failed", extra={"error": type(again).__name__})
                failures.append({"itemIdentifier": str(record.get("messageId", ""))})
                metrics.count("DocumentIngestions", outcome="retry")
                continue
        logger.info("ingest: document handled", extra={"outcome": outcome})
        # ready, failed (given up, or unreadable), gone (deleted meanwhile), done (by another delivery).
        metrics.count("DocumentIngestions", outcome=outcome)
    return failures


@observed_queue
@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return partial_batch_response(event, context, ingest)
