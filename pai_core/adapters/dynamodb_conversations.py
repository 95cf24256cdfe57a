"""DynamoDB repository of conversation turns (table `pai-conversations-{env}`).

Every turn's content is sealed under its user's branch key, bound to the turn it belongs to."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.adapters.dynamodb_pages import (
    Item,
    batch_delete,
    epoch_micros,
    landed_earlier,
    owner_category,
    query_items,
)
from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.errors import UpstreamUnavailable
from pai_core.models import Turn

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

OWNER_INDEX = "owner-index"
_TURN_WRITE_ATTEMPTS = 5


class DynamoConversationRepository:
    """Table `pai-conversations-{env}`: sessionId (hash) + timestamp (range, microseconds), `ttl`.

    The stored sessionId is `{owner}#{sessionId}`, so one user's session can never be read through
    another's, whatever id the client picks."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        cipher: EnvelopeCipher,
        *,
        context_name: str,
        ttl_seconds: int,
    ) -> None:
        self._client = client
        self._table = table
        self._cipher = cipher
        self._context_name = context_name
        self._ttl_seconds = ttl_seconds

    def _context(self, owner: str, session_id: str, timestamp: int, role: str) -> RecordContext:
        return RecordContext(
            partition={"table": self._context_name, "owner": owner},
            record={"sessionId": session_id, "timestamp": str(timestamp), "role": role, "attribute": "content"},
        )

    def append(self, owner: str, session_id: str, turn: Turn) -> None:
        timestamp = epoch_micros(turn.at)
        expires = int(turn.at.timestamp()) + self._ttl_seconds
        for _ in range(_TURN_WRITE_ATTEMPTS):
            content = self._cipher.encrypt(
                turn.content.encode("utf-8"), self._context(owner, session_id, timestamp, turn.role)
            )
            item: Item = {
                "sessionId": {"S": owner_category(owner, session_id)},
                "timestamp": {"N": str(timestamp)},
                "owner": {"S": owner},
                "role": {"S": turn.role},
                "encryptedContent": {"B": content},
                "ttl": {"N": str(expires)},
            }
            try:
                with translated_aws_errors("DynamoDB"):
                    self._client.put_item(
                        TableName=self._table,
                        Item=item,
                        ConditionExpression="attribute_not_exists(#ts)",
                        ExpressionAttributeNames={"#ts": "timestamp"},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                return
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                if landed_earlier(exc, item):
                    return
                timestamp += 1  # two turns in one microsecond: the later one moves up by one
        raise UpstreamUnavailable("could not find a free slot for the conversation turn")

    def recent(self, owner: str, session_id: str, *, now: datetime, limit: int) -> list[Turn]:
        if limit <= 0:
            return []
        oldest_live = epoch_micros(now) - self._ttl_seconds * 1_000_000
        with translated_aws_errors("DynamoDB"):
            response = self._client.query(
                TableName=self._table,
                KeyConditionExpression="sessionId = :sid AND #ts > :oldest",
                ExpressionAttributeNames={"#ts": "timestamp"},
                ExpressionAttributeValues={
                    ":sid": {"S": owner_category(owner, session_id)},
                    ":oldest": {"N": str(oldest_live)},
                },
                ScanIndexForward=False,
                Limit=limit,
                ConsistentRead=True,
            )
        now_seconds = now.timestamp()
        turns: list[Turn] = []
        for item in response.get("Items", []):
            # DynamoDB deletes expired items lazily (and emulators never), so expiry is checked here too.
            if int(item["ttl"]["N"]) <= now_seconds:
                continue
            timestamp = int(item["timestamp"]["N"])
            role = item["role"]["S"]
            text = self._cipher.decrypt(
                item["encryptedContent"]["B"], self._context(owner, session_id, timestamp, role)
            )
            turns.append(
                Turn(
                    role="user" if role == "user" else "assistant",
                    content=text.decode("utf-8"),
                    at=datetime.fromtimestamp(timestamp / 1_000_000, UTC),
                )
            )
        turns.reverse()
        return turns

    # -- a user's whole account (pai_core.ports.ConversationArchive) ------------------------------

    def all_turns(self, owner: str) -> Iterator[tuple[str, Turn]]:
        """Every stored turn of the owner, across sessions, oldest first, with its session id.
        Expired turns DynamoDB has not deleted yet are included: they are still stored."""
        for item in self._owner_items(owner, projection=None):
            session_id = item["sessionId"]["S"].partition("#")[2]
            timestamp = int(item["timestamp"]["N"])
            role = item["role"]["S"]
            text = self._cipher.decrypt(
                item["encryptedContent"]["B"], self._context(owner, session_id, timestamp, role)
            )
            yield (
                session_id,
                Turn(
                    role="user" if role == "user" else "assistant",
                    content=text.decode("utf-8"),
                    at=datetime.fromtimestamp(timestamp / 1_000_000, UTC),
                ),
            )

    def purge(self, owner: str) -> int:
        keys = [
            {"sessionId": item["sessionId"], "timestamp": item["timestamp"]}
            for item in self._owner_items(owner, projection="sessionId, #ts")
        ]
        batch_delete(self._client, self._table, keys)
        return len(keys)

    def _owner_items(self, owner: str, *, projection: str | None) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
        }
        if projection is not None:
            query["ProjectionExpression"] = projection
            query["ExpressionAttributeNames"]["#ts"] = "timestamp"
        return query_items(self._client, query)
