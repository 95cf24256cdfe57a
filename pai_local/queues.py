"""The template's SQS event source mappings, run locally: a poller per mapping receives messages
from the emulator's queue and invokes the mapped function with an SQS event, as Lambda's event
source mapping does, through the same `Functions` that serve the gateway's routes.

Partial batch responses are honoured (ReportBatchItemFailures): the messages the function reports
as failed, or all of them when the invocation failed, stay on the queue, to be received again
after the queue's visibility timeout and, past the redrive policy's maxReceiveCount, moved to its
dead-letter queue by the emulator.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from pai_local.functions import Failed, Functions, Returned
from pai_local.template import Template

log = logging.getLogger("pai_local.queues")

# Local polling: short polls (a long poll would hold the emulator, which serves one request at a
# time while it keeps state), one a second while the queue is empty.
POLL_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class SqsMapping:
    queue_id: str  # the queue's logical id
    handler: str  # the mapped function's handler
    batch_size: int
    reports_failures: bool


def sqs_mappings(template: Template) -> list[SqsMapping]:
    mappings = []
    for spec in template.of_type("AWS::Lambda::EventSourceMapping").values():
        props = spec["Properties"]
        source = props["EventSourceArn"]
        function = template.chosen(props["FunctionName"])
        if "Fn::GetAtt" not in source or "Ref" not in function:
            continue
        queue_id = source["Fn::GetAtt"][0]
        if template.resources[queue_id]["Type"] != "AWS::SQS::Queue":
            continue
        mappings.append(
            SqsMapping(
                queue_id=queue_id,
                handler=str(template.properties(template.function_of(function))["Handler"]),
                batch_size=int(props.get("BatchSize", 10)),
                reports_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            )
        )
    return mappings


class QueuePoller:
    """One thread per mapping: receive, invoke, delete what was handled."""

    def __init__(
        self,
        mappings: list[SqsMapping],
        queues: dict[str, str],
        sqs: Any,
        functions: Functions,
        *,
        region: str,
        interval: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._mappings = [mapping for mapping in mappings if mapping.queue_id in queues]
        self._queues = queues
        self._sqs = sqs
        self._functions = functions
        self._region = region
        self._interval = interval
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for mapping in self._mappings:
            thread = threading.Thread(
                target=self._run, args=(mapping,), name=f"pai-sqs-{mapping.queue_id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, mapping: SqsMapping) -> None:
        while not self._stopping.is_set():
            try:
                handled = self.poll_once(mapping)
            except Exception:  # the emulator stopping, say: try again at the next poll
                log.warning("polling the %s queue failed", mapping.queue_id, exc_info=True)
                handled = 0
            if not handled:
                self._stopping.wait(self._interval)

    def poll_once(self, mapping: SqsMapping) -> int:
        """Receives one batch and hands it to the function; how many messages it held."""
        url = self._queues[mapping.queue_id]
        received = self._sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=min(mapping.batch_size, 10), WaitTimeSeconds=0, AttributeNames=["All"]
        )
        messages = received.get("Messages", [])
        if not messages:
            return 0
        arn = f"arn:aws:sqs:{self._region}:000000000000:{url.rstrip('/').rsplit('/', 1)[-1]}"
        event = {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": message.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": message.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": self._region,
                }
                for message in messages
            ]
        }
        failed = self._invoke(mapping, event)
        for message in messages:
            if failed is None or message["MessageId"] in failed:
                continue
            self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def _invoke(self, mapping: SqsMapping, event: dict[str, Any]) -> set[str] | None:
        """The ids of the messages that failed; None when the whole batch did."""
        invocation = self._functions.invoke(mapping.handler, event)
        while True:
            message = invocation.next()
            if isinstance(message, Failed):
                log.warning(
                    "the %s function failed on a batch (%s): it will be received again", mapping.handler, message.reason
                )
                return None
            if isinstance(message, Returned):
                result = message.result or {}
                if not mapping.reports_failures:
                    return set()
                failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
                return {str(item.get("itemIdentifier")) for item in failures if isinstance(item, dict)}
