"""DynamoDB as the store of per-user usage counters (pai_core.limits).

Table `pai-usage-{env}`: partition key `id` (the counter's name, which names its user and window),
`count` (a number), `ttl` (epoch seconds; DynamoDB's TTL removes old windows). One `UpdateItem ADD`
per count is atomic however many containers count at once, and returns the new total, so a
request costs one write and no read.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pai_core.adapters.aws_errors import translated_aws_errors

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_NAMES = {"#count": "count", "#ttl": "ttl"}


class DynamoUsageCounters:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def add(self, name: str, amount: int, *, expires_at: datetime) -> int:
        with translated_aws_errors("DynamoDB"):
            response = self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": name}},
                UpdateExpression="ADD #count :amount SET #ttl = :ttl",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":amount": {"N": str(amount)},
                    ":ttl": {"N": str(int(expires_at.timestamp()))},
                },
                ReturnValues="UPDATED_NEW",
            )
        return int(response["Attributes"]["count"]["N"])

    def get(self, name: str) -> int:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table,
                Key={"id": {"S": name}},
                ProjectionExpression="#count",
                ExpressionAttributeNames={"#count": "count"},
                # A budget check right after a charge must see it.
                ConsistentRead=True,
            )
        item = response.get("Item")
        return int(item["count"]["N"]) if item and "count" in item else 0
