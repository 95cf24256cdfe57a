"""What every DynamoDB adapter here shares: the item type, every page of a Query, deletes 25 at a
time, and telling a retried conditional write from a real conflict."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import translated_aws_errors
from pai_core.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = dict[str, "AttributeValueTypeDef"]
Sleep = Callable[[float], None]

_BATCH_WRITE_LIMIT = 25
_BATCH_WRITE_ATTEMPTS = 5
_BATCH_GET_LIMIT = 100
_BATCH_GET_ATTEMPTS = 5


def owner_category(owner: str, category: str) -> str:
    return f"{owner}#{category}"


def epoch_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def epoch_micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def landed_earlier(exc: ClientError, item: Item) -> bool:
    """Whether a conditional put refused as a duplicate was refused because of itself: botocore
    resends a write whose answer was lost (a read timeout, a 500), and the first attempt may have
    landed. The item that is there (ReturnValuesOnConditionCheckFailure) then carries this very
    ciphertext, which no other write can: a fresh random salt and nonce seal every value."""
    response: dict[str, Any] = dict(exc.response)
    existing = response.get("Item") or {}
    return bool(existing) and existing.get("encryptedContent") == item["encryptedContent"]


def query_items(client: DynamoDBClient, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item the Query matches, page after page (`query` is updated with each start key)."""
    while True:
        with translated_aws_errors("DynamoDB"):
            response = client.query(**query)
        yield from response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return
        query["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def batch_get(
    client: DynamoDBClient,
    table: str,
    keys: list[dict[str, Any]],
    *,
    projection: str | None = None,
    sleep: Sleep = time.sleep,
) -> Iterator[dict[str, Any]]:
    """The items of `keys` that exist, read consistently, 100 per BatchGetItem, retrying what
    DynamoDB leaves unprocessed. `projection` may name the owner as `#owner`."""
    for start in range(0, len(keys), _BATCH_GET_LIMIT):
        options: dict[str, Any] = {"Keys": keys[start : start + _BATCH_GET_LIMIT], "ConsistentRead": True}
        if projection is not None:
            options["ProjectionExpression"] = projection
            options["ExpressionAttributeNames"] = {"#owner": "owner"}
        request: dict[str, Any] = {table: options}
        for attempt in range(_BATCH_GET_ATTEMPTS):
            with translated_aws_errors("DynamoDB"):
                response = client.batch_get_item(RequestItems=request)
            yield from response.get("Responses", {}).get(table, [])
            request = dict(response.get("UnprocessedKeys") or {})
            if not request:
                break
            sleep(0.05 * 2**attempt)
        else:
            raise UpstreamUnavailable("DynamoDB did not return every requested item")


def batch_write(client: DynamoDBClient, table: str, requests: list[Any], *, sleep: Sleep = time.sleep) -> None:
    """Put or delete items, 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed."""
    for start in range(0, len(requests), _BATCH_WRITE_LIMIT):
        pending = requests[start : start + _BATCH_WRITE_LIMIT]
        for attempt in range(_BATCH_WRITE_ATTEMPTS):
            with translated_aws_errors("DynamoDB"):
                response = client.batch_write_item(RequestItems={table: pending})
            pending = list((response.get("UnprocessedItems") or {}).get(table, []))
            if not pending:
                break
            sleep(0.05 * 2**attempt)
        else:
            raise UpstreamUnavailable("DynamoDB did not process every write; run the request again")


def batch_delete(client: DynamoDBClient, table: str, keys: list[dict[str, Any]], *, sleep: Sleep = time.sleep) -> None:
    """Delete items by key, 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed."""
    batch_write(client, table, [{"DeleteRequest": {"Key": key}} for key in keys], sleep=sleep)
