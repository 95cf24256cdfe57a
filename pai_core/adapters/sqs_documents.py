"""The document ingestion queue (SQS): the documents function sends each accepted large upload's
reference to it; the ingest function receives them (an event source mapping in AWS, the local
harness's poller locally)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import translated_aws_errors
from pai_core.documents.jobs import IngestJob
from pai_core.errors import UpstreamUnavailable


class SqsIngestQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, job: IngestJob) -> None:
        # The body is a reference (owner, document id), never the file or its text.
        try:
            with translated_aws_errors("SQS"):
                self._client.send_message(QueueUrl=self._queue_url, MessageBody=job.to_json())
        except ClientError as exc:
            raise UpstreamUnavailable("the document ingestion queue is unavailable") from exc
