"""The learning queue (SQS): the chat function sends each learned-from turn's reference to it; the
learning function receives them (an event source mapping in AWS, the local harness's poller locally)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import translated_aws_errors
from pai_core.errors import UpstreamUnavailable
from pai_core.learning.jobs import LearningJob


class SqsLearningQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, job: LearningJob) -> None:
        # The body is a reference (owner, session, the turn's time), never the user's words.
        try:
            with translated_aws_errors("SQS"):
                self._client.send_message(QueueUrl=self._queue_url, MessageBody=job.to_json())
        except ClientError as exc:  # a queue that is gone or refuses us: the turn is not learned
            raise UpstreamUnavailable("the learning queue is unavailable") from exc
