"""Whether the tables can be reached (the health check)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pai_core.adapters.aws_errors import translated_aws_errors

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoStorageProbe:
    def __init__(self, client: DynamoDBClient, tables: Sequence[str]) -> None:
        self._client = client
        self._tables = tuple(tables)

    def check(self) -> None:
        for table in self._tables:
            with translated_aws_errors("DynamoDB"):
                self._client.describe_table(TableName=table)
