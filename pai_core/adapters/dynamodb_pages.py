"""Reading and deleting many DynamoDB items: every page of a Query, deletes 25 at a time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pai_core.adapters.aws_errors import translated_aws_errors
from pai_core.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BATCH_WRITE_LIMIT = 25
_BATCH_WRITE_ATTEMPTS = 5


def query_items(client: DynamoDBClient, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item the Query matches, page after page (`query` is updated with each start key)."""
    while True:
        with translated_aws_errors("DynamoDB"):
            response = client.query(**query)
        yield from response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return
        query["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def batch_delete(client: DynamoDBClient, table: str, keys: list[dict[str, Any]]) -> None:
    """Delete items by key, 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed."""
    for start in range(0, len(keys), _BATCH_WRITE_LIMIT):
        requests: list[Any] = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + _BATCH_WRITE_LIMIT]]
        for attempt in range(_BATCH_WRITE_ATTEMPTS):
            with translated_aws_errors("DynamoDB"):
                response = client.batch_write_item(RequestItems={table: requests})
            requests = list((response.get("UnprocessedItems") or {}).get(table, []))
            if not requests:
                break
            time.sleep(0.05 * 2**attempt)
        else:
            raise UpstreamUnavailable("DynamoDB did not process every delete; run the deletion again")
