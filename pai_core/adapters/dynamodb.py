"""DynamoDB repositories for long-term memories and conversation turns.

Every user-supplied value (content, metadata, and the embedding, which can be inverted back into
much of its text) is sealed under its user's branch key before it leaves this module, bound to the
record and attribute it belongs to. Category names, ids and times stay readable: they are the keys
the tables are queried by. Every read is a key lookup or a Query inside the caller's own partition: no Scan.

Besides the memories (partition `{owner}`), the knowledge table holds two small partitions per
owner that let a search index stay current without re-reading every memory:

    {owner}#changes / head   `version`: a counter moved (UpdateItem ADD) after every store and
                             delete has landed, read with one GetItem per search
    {owner}#deleted / <id>   a tombstone per delete (`deletedId`, `ttl`), read with a key-range
                             Query past the index's watermark

Owners never contain '#' (see config), so these partitions cannot collide with a real owner's, and
listing (the owner's own partition, the category GSI, which tombstones lack the keys for) never
sees them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.adapters.dynamodb_pages import batch_delete, query_items
from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.errors import Conflict, InvalidInput, UpstreamUnavailable
from pai_core.ids import ID_HEX_CHARS, MemoryIds
from pai_core.models import (
    VECTOR_DTYPE,
    ChangeStamp,
    Deletion,
    Memory,
    MemoryPage,
    MemoryVector,
    Turn,
    iso_utc,
    parse_iso_utc,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = dict[str, "AttributeValueTypeDef"]
log = logging.getLogger(__name__)

CATEGORY_INDEX = "category-index"
OWNER_INDEX = "owner-index"
_BATCH_GET_LIMIT = 100
_BATCH_GET_ATTEMPTS = 5
_TURN_WRITE_ATTEMPTS = 5
CHANGES_SUFFIX = "#changes"
DELETED_SUFFIX = "#deleted"
HEAD_ID = "head"
# Tombstones outlive any index that could still need them: a warm index reads them within
# seconds, and a snapshot older than half this is not used once anything has changed.
TOMBSTONE_TTL_SECONDS = 7 * 24 * 3600
_VECTOR_PROJECTION = "id, category, encryptedEmbedding"
# What from_item reads: a hit's sealed embedding (the larger half of its item) stays in the table.
_MEMORY_PROJECTION = "#owner, id, category, createdAt, encryptedContent, encryptedMetadata"


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


class DynamoMemoryRepository:
    """Table `pai-knowledge-{env}`: owner (hash) + id (range); GSI `category-index` on
    ownerCategory (hash) + timestamp (range). Ids sort by creation time, so the table's own
    order is newest-first when read backwards."""

    def __init__(self, client: DynamoDBClient, table: str, cipher: EnvelopeCipher, *, context_name: str) -> None:
        self._client = client
        self._table = table
        self._cipher = cipher
        self._context_name = context_name
        self._tombstone_ids = MemoryIds()

    # -- encoding -------------------------------------------------------------------------------

    def _context(self, owner: str, memory_id: str, attribute: str) -> RecordContext:
        return RecordContext(
            partition={"table": self._context_name, "owner": owner},
            record={"id": memory_id, "attribute": attribute},
        )

    def to_item(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> Item:
        content = self._cipher.encrypt(memory.content.encode("utf-8"), self._context(owner, memory.id, "content"))
        metadata_json = json.dumps(memory.metadata, separators=(",", ":"), ensure_ascii=False)
        metadata = self._cipher.encrypt(metadata_json.encode("utf-8"), self._context(owner, memory.id, "metadata"))
        vector = np.asarray(embedding, dtype=VECTOR_DTYPE).tobytes()
        return {
            "owner": {"S": owner},
            "id": {"S": memory.id},
            "category": {"S": memory.category},
            "ownerCategory": {"S": owner_category(owner, memory.category)},
            "timestamp": {"N": str(epoch_millis(memory.created_at))},
            "createdAt": {"S": iso_utc(memory.created_at)},
            "encryptedContent": {"B": content},
            "encryptedMetadata": {"B": metadata},
            # Embeddings can be inverted back into much of their text, so they are sealed like it.
            "encryptedEmbedding": {"B": self._cipher.encrypt(vector, self._context(owner, memory.id, "embedding"))},
        }

    def from_item(self, owner: str, item: dict[str, Any]) -> Memory:
        memory_id = item["id"]["S"]
        content = self._cipher.decrypt(item["encryptedContent"]["B"], self._context(owner, memory_id, "content"))
        metadata = self._cipher.decrypt(item["encryptedMetadata"]["B"], self._context(owner, memory_id, "metadata"))
        return Memory(
            id=memory_id,
            content=content.decode("utf-8"),
            category=item["category"]["S"],
            metadata=json.loads(metadata),
            created_at=parse_iso_utc(item["createdAt"]["S"]),
        )

    # -- operations -----------------------------------------------------------------------------

    def add(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> None:
        # Everything is encrypted before the single PutItem: either the whole record lands or none.
        item = self.to_item(owner, memory, embedding)
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(id)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            if not landed_earlier(exc, item):
                raise Conflict("a memory with this id already exists") from exc
        self._announce_change(owner)

    def get(self, owner: str, memory_id: str) -> Memory | None:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table, Key=self._key(owner, memory_id), ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else self.from_item(owner, item)

    def get_many(self, owner: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        found: dict[str, Memory] = {}
        unique_ids = list(dict.fromkeys(memory_ids))
        for start in range(0, len(unique_ids), _BATCH_GET_LIMIT):
            chunk = unique_ids[start : start + _BATCH_GET_LIMIT]
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [self._key(owner, i) for i in chunk],
                    "ConsistentRead": True,
                    "ProjectionExpression": _MEMORY_PROJECTION,
                    "ExpressionAttributeNames": {"#owner": "owner"},
                }
            }
            for attempt in range(_BATCH_GET_ATTEMPTS):
                with translated_aws_errors("DynamoDB"):
                    response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    memory = self.from_item(owner, item)
                    found[memory.id] = memory
                request = dict(response.get("UnprocessedKeys") or {})
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise UpstreamUnavailable("DynamoDB did not return every requested memory")
        return found

    def page(self, owner: str, *, category: str | None, limit: int, cursor: str | None) -> MemoryPage:
        query: dict[str, Any] = {"TableName": self._table, "Limit": limit, "ScanIndexForward": False}
        if category is None:
            query["KeyConditionExpression"] = "#owner = :owner"
            query["ExpressionAttributeNames"] = {"#owner": "owner"}
            query["ExpressionAttributeValues"] = {":owner": {"S": owner}}
            query["ConsistentRead"] = True
        else:
            query["IndexName"] = CATEGORY_INDEX
            query["KeyConditionExpression"] = "ownerCategory = :oc"
            query["ExpressionAttributeValues"] = {":oc": {"S": owner_category(owner, category)}}
        if cursor is not None:
            query["ExclusiveStartKey"] = self._start_key(owner, category, cursor)
        try:
            with translated_aws_errors("DynamoDB"):
                response = self._client.query(**query)
        except ClientError as exc:
            # Every other input of this Query is ours; a start key DynamoDB refuses came from the caller.
            if cursor is not None and error_code(exc) == "ValidationException":
                raise InvalidInput(_NOT_OURS, field="cursor") from exc
            raise
        items = [self.from_item(owner, item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        next_cursor = None
        if last:
            ts = int(last["timestamp"]["N"]) if "timestamp" in last else None
            next_cursor = encode_cursor(CursorPosition(id=last["id"]["S"], ts=ts))
        return MemoryPage(items=items, cursor=next_cursor)

    def delete(self, owner: str, memory_id: str) -> bool:
        """Deletes the memory, then leaves a tombstone and moves the change stamp (in that order:
        whatever fails after the delete, the memory is gone and can never be a search hit)."""
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.delete_item(
                    TableName=self._table,
                    Key=self._key(owner, memory_id),
                    ConditionExpression="attribute_exists(id)",
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        now = datetime.now(UTC)
        tombstone: Item = {
            "owner": {"S": owner + DELETED_SUFFIX},
            "id": {"S": self._tombstone_ids(now)},
            "deletedId": {"S": memory_id},
            "ttl": {"N": str(int(now.timestamp()) + TOMBSTONE_TTL_SECONDS)},
        }
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.put_item(TableName=self._table, Item=tombstone)
        except UpstreamUnavailable:
            log.warning("tombstone not written: warm search indexes drop the memory at their next full reload")
            return True
        self._announce_change(owner)
        return True

    def _announce_change(self, owner: str) -> None:
        """Moves the owner's change stamp, after the change itself has landed.

        Not one transaction with the change on purpose: moto copies the whole table for every
        TransactWriteItems (seconds at 10K memories, past the client's timeout), and the local stack
        runs on moto. The order makes a failure here harmless to correctness: the change is durable,
        search results are always fetched by key, and warm indexes elsewhere see it at the next
        change or their periodic full reload."""
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.update_item(
                    TableName=self._table,
                    Key=self._key(owner + CHANGES_SUFFIX, HEAD_ID),
                    UpdateExpression="ADD #version :one",
                    ExpressionAttributeNames={"#version": "version"},
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
        except UpstreamUnavailable:
            log.warning("change stamp not moved: warm search indexes see the change at their next reload")

    def vectors(self, owner: str) -> Iterator[MemoryVector]:
        """Every vector of the owner: the design's read per search (eventually consistent)."""
        return self._vector_query(owner, consistent=False)

    # -- a user's whole account (pai_core.ports.MemoryArchive) ------------------------------------

    def all_memories(self, owner: str) -> Iterator[Memory]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ConsistentRead": True,
        }
        for item in self._paginate(query):
            yield self.from_item(owner, item)

    def purge(self, owner: str) -> int:
        """Delete every item of the owner (memories, tombstones) but the head; how many memories.

        The head stays, holding two counters and nothing of the user's: its generation is what tells
        other containers' warm indexes that the owner was forgotten (read back as 0 if it went)."""
        memories = 0
        for partition in (owner, owner + CHANGES_SUFFIX, owner + DELETED_SUFFIX):
            keys = [
                {"owner": item["owner"], "id": item["id"]}
                for item in self._paginate(self._range_query(partition, "", projection="#owner, id"))
                if not (partition == owner + CHANGES_SUFFIX and item["id"]["S"] == HEAD_ID)
            ]
            batch_delete(self._client, self._table, keys)
            if partition == owner:
                memories = len(keys)
        return memories

    # -- the change feed of a search index (pai_core.ports.MemoryChangeFeed) ---------------------

    def change_stamp(self, owner: str) -> ChangeStamp:
        # Both counters live on the one small head item: reading the generation costs no extra unit.
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table,
                Key=self._key(owner + CHANGES_SUFFIX, HEAD_ID),
                ProjectionExpression="#version, #generation",
                ExpressionAttributeNames={"#version": "version", "#generation": "generation"},
                ConsistentRead=True,
            )
        item = response.get("Item") or {}
        return ChangeStamp(
            version=int(item["version"]["N"]) if "version" in item else 0,
            generation=int(item["generation"]["N"]) if "generation" in item else 0,
        )

    # -- forgetting an owner everywhere (pai_core.ports.OwnerGenerations) --------------------------

    def move_generation(self, owner: str) -> int:
        """One atomic increment of the head's generation; the new value. Not best-effort like the
        change stamp: a forget must not go on if other containers cannot be told."""
        with translated_aws_errors("DynamoDB"):
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(owner + CHANGES_SUFFIX, HEAD_ID),
                UpdateExpression="ADD #generation :one",
                ExpressionAttributeNames={"#generation": "generation"},
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW",
            )
        generation = int(response["Attributes"]["generation"]["N"])
        if generation < 1:
            raise UpstreamUnavailable("the owner's generation did not move")
        return generation

    def all_vectors(self, owner: str) -> Iterator[MemoryVector]:
        return self._vector_query(owner, consistent=True)

    def vectors_after(self, owner: str, after_id: str) -> Iterator[MemoryVector]:
        return self._vector_query(owner, consistent=True, after_id=after_id)

    def deletions_after(self, owner: str, after_id: str) -> Iterator[Deletion]:
        query = self._range_query(owner + DELETED_SUFFIX, after_id, projection="id, deletedId")
        for item in self._paginate(query):
            yield Deletion(id=item["id"]["S"], memory_id=item["deletedId"]["S"])

    def _vector_query(self, owner: str, *, consistent: bool, after_id: str = "") -> Iterator[MemoryVector]:
        query = self._range_query(owner, after_id, projection=_VECTOR_PROJECTION)
        query["ConsistentRead"] = consistent
        for item in self._paginate(query):
            memory_id = item["id"]["S"]
            vector = self._cipher.decrypt(item["encryptedEmbedding"]["B"], self._context(owner, memory_id, "embedding"))
            yield MemoryVector(id=memory_id, category=item["category"]["S"], vector=vector)

    def _range_query(self, partition: str, after_id: str, *, projection: str) -> dict[str, Any]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": partition}},
            "ConsistentRead": True,
        }
        if after_id:
            query["KeyConditionExpression"] += " AND id > :after"
            query["ExpressionAttributeValues"][":after"] = {"S": after_id}
        return query

    def _paginate(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return query_items(self._client, query)

    def _key(self, owner: str, memory_id: str) -> Item:
        return {"owner": {"S": owner}, "id": {"S": memory_id}}

    def _start_key(self, owner: str, category: str | None, cursor: str) -> Item:
        position = decode_cursor(cursor, category_listing=category is not None)
        key = self._key(owner, position.id)
        if category is not None:
            key["ownerCategory"] = {"S": owner_category(owner, category)}
            key["timestamp"] = {"N": str(position.ts)}
        return key


# -- list cursors -------------------------------------------------------------------------------------
#
# A cursor is the last key a page read, without the owner (the start key is rebuilt around the
# caller's own, so no cursor can reach into another partition): `{"id"}` for the owner's listing,
# `{"id", "ts"}` for a category's (its index sorts by timestamp), as unpadded URL-safe base64 of
# compact JSON. Anything else is refused before DynamoDB is called: a key of the wrong type or shape
# would be DynamoDB's ValidationException (or an emulator's 500), not the caller's 400.

_CURSOR_ID = re.compile(f"[0-9a-f]{{{ID_HEX_CHARS}}}")
_MAX_CURSOR_TIMESTAMP = 2**48 - 1  # the milliseconds an id has room for (pai_core.ids)
_NOT_OURS = "cursor is not one this API returned"


@dataclass(frozen=True)
class CursorPosition:
    id: str
    ts: int | None = None  # the item's `timestamp`: only in a category listing's cursor


def encode_cursor(position: CursorPosition) -> str:
    fields: dict[str, Any] = {"id": position.id}
    if position.ts is not None:
        fields["ts"] = position.ts
    raw = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, *, category_listing: bool) -> CursorPosition:
    """The position a cursor of ours holds; InvalidInput (field `cursor`) for anything else,
    including a real cursor of the other kind of listing."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        fields = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):  # not base64, not UTF-8, not JSON
        raise InvalidInput(_NOT_OURS, field="cursor") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("id"), str) or not _CURSOR_ID.fullmatch(fields["id"]):
        raise InvalidInput(_NOT_OURS, field="cursor")
    ts = fields.get("ts")
    if set(fields) not in ({"id"}, {"id", "ts"}) or (
        ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _MAX_CURSOR_TIMESTAMP)
    ):
        raise InvalidInput(_NOT_OURS, field="cursor")
    position = CursorPosition(id=fields["id"], ts=ts)
    # Only the exact text encode_cursor makes: no padding, no whitespace, no duplicate keys.
    if encode_cursor(position) != cursor:
        raise InvalidInput(_NOT_OURS, field="cursor")
    if category_listing != (ts is not None):
        raise InvalidInput("cursor does not belong to this listing", field="cursor")
    return position


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


class DynamoStorageProbe:
    def __init__(self, client: DynamoDBClient, tables: Sequence[str]) -> None:
        self._client = client
        self._tables = tuple(tables)

    def check(self) -> None:
        for table in self._tables:
            with translated_aws_errors("DynamoDB"):
                self._client.describe_table(TableName=table)
