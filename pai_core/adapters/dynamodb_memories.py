"""DynamoDB repository of long-term memories (table `pai-knowledge-{env}`): the owner's current
memories, the earlier versions of updated ones, and (through DynamoChangeLog) the change log that
keeps search indexes current. The item layout and what is sealed: pai_core.adapters.memory_codec.
Every read is a key lookup or a Query inside the caller's own partitions: no Scan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.adapters.dynamodb_changelog import DynamoChangeLog
from pai_core.adapters.dynamodb_cursors import NOT_OURS, CursorPosition, decode_cursor, encode_cursor
from pai_core.adapters.dynamodb_pages import (
    Item,
    Sleep,
    batch_delete,
    batch_get,
    landed_earlier,
    owner_category,
    query_items,
)
from pai_core.adapters.memory_codec import (
    HISTORY_SUFFIX,
    INDEX_PROJECTION,
    PastVersion,
    history_item,
    history_key,
    history_prefix,
    indexed_from_item,
    memory_from_item,
    memory_item,
    past_from_item,
    reason_from_item,
    seal_embedding,
    version_of,
)
from pai_core.crypto import EnvelopeCipher
from pai_core.errors import Conflict, InvalidInput, UpstreamUnavailable
from pai_core.models import (
    VECTOR_DTYPE,
    ChangeOp,
    IndexedItem,
    ItemRef,
    Memory,
    MemoryEdit,
    MemoryPage,
    MemoryVersion,
    Origin,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

CATEGORY_INDEX = "category-index"
# Tombstones of deletes, before the change log replaced them: still shredded by a forget.
LEGACY_DELETED_SUFFIX = "#deleted"
# A listing by origin filters the owner's items after reading them: it reads at most this many
# pages of `limit` items per request, then returns what it found with a cursor to go on from.
_ORIGIN_LISTING_PAGES = 10


class DynamoMemoryRepository:
    """Table `pai-knowledge-{env}`: owner (hash) + id (range); GSI `category-index` on
    ownerCategory (hash) + timestamp (range). Ids sort by creation time, so the table's own
    order is newest-first when read backwards."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        cipher: EnvelopeCipher,
        *,
        context_name: str,
        changes: DynamoChangeLog,
        sleep: Sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._cipher = cipher
        self._context_name = context_name
        self._changes = changes
        self._sleep = sleep

    # -- encoding -------------------------------------------------------------------------------

    def to_item(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> Item:
        vector = np.asarray(embedding, dtype=VECTOR_DTYPE).tobytes()
        sealed = seal_embedding(self._cipher, self._context_name, owner, memory.id, vector)
        return memory_item(self._cipher, self._context_name, owner, memory, sealed_embedding=sealed)

    def from_item(self, owner: str, item: dict[str, Any]) -> Memory:
        return memory_from_item(self._cipher, self._context_name, owner, item)

    # -- writes ---------------------------------------------------------------------------------

    def add(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> None:
        self._put_new(owner, memory, embedding)
        self._changes.record(owner, [("put", ItemRef("memory", memory.id))])

    def add_many(self, owner: str, memories: Sequence[tuple[Memory, npt.NDArray[np.float32]]]) -> None:
        """One conditional PutItem per memory (a retried one is recognized by its own ciphertext, so
        each is written once), then one change-log entry per memory and one move of the head."""
        stored: list[tuple[ChangeOp, ItemRef]] = []
        try:
            for memory, embedding in memories:
                self._put_new(owner, memory, embedding)
                stored.append(("put", ItemRef("memory", memory.id)))
        finally:
            self._changes.record(owner, stored)  # what did land is announced even if the rest failed

    def _put_new(self, owner: str, memory: Memory, embedding: npt.NDArray[np.float32]) -> None:
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

    def update(
        self,
        owner: str,
        memory_id: str,
        edit: MemoryEdit,
        *,
        embedding: npt.NDArray[np.float32] | None,
        reason: str | None,
        at: datetime,
    ) -> Memory | None:
        """Reads the current version, writes it as an earlier version (sealed under its version
        number), then replaces the current one only if it is still the version read (else Conflict:
        another update came first). The earlier version's item is the same whichever of two
        concurrent updates writes it, so a lost race leaves nothing wrong behind."""
        if edit.content is not None and embedding is None:
            raise ValueError("a new content needs its embedding")
        current = self._get_item(owner, memory_id)
        if current is None:
            return None
        before = self.from_item(owner, current)
        version = version_of(current)
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored: what is returned is what is read
        past = PastVersion(
            memory_id=memory_id,
            version=version,
            content=before.content,
            category=before.category,
            metadata=before.metadata,
            valid_from=before.last_changed,
            reason=reason_from_item(self._cipher, self._context_name, owner, current),
        )
        with translated_aws_errors("DynamoDB"):
            self._client.put_item(
                TableName=self._table, Item=history_item(self._cipher, self._context_name, owner, past)
            )
        after = dataclasses.replace(
            before,
            content=edit.content if edit.content is not None else before.content,
            category=edit.category if edit.category is not None else before.category,
            metadata=edit.metadata if edit.metadata is not None else before.metadata,
            updated_at=at,
        )
        if embedding is not None:
            vector = np.asarray(embedding, dtype=VECTOR_DTYPE).tobytes()
            sealed = seal_embedding(self._cipher, self._context_name, owner, memory_id, vector)
        else:
            sealed = current["encryptedEmbedding"]["B"]  # same memory, same attribute: still bound right
        item = memory_item(
            self._cipher, self._context_name, owner, after, sealed_embedding=sealed, version=version + 1, reason=reason
        )
        condition = (
            "#version = :version" if "version" in current else "attribute_exists(id) AND attribute_not_exists(#version)"
        )
        request: dict[str, Any] = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#version": "version"},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if "version" in current:
            request["ExpressionAttributeValues"] = {":version": {"N": str(version)}}
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.put_item(**request)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            if not dict(exc.response).get("Item"):  # deleted meanwhile: so is the version just kept
                with contextlib.suppress(UpstreamUnavailable):
                    batch_delete(self._client, self._table, [history_key(owner, memory_id, version)], sleep=self._sleep)
                return None
            if not landed_earlier(exc, item):
                raise Conflict("the memory changed while it was being updated; read it and try again") from exc
        self._changes.record(owner, [("update", ItemRef("memory", memory_id))])
        return after

    def delete(self, owner: str, memory_id: str) -> bool:
        """Deletes the memory, then records the change, then deletes its earlier versions (in that
        order: whatever fails after the delete, the memory is gone and can never be a search hit;
        earlier versions left behind by a failure are reachable by no request and go with a forget)."""
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
        self._changes.record(owner, [("delete", ItemRef("memory", memory_id))])
        try:
            keys = [{"owner": i["owner"], "id": i["id"]} for i in self._history_items(owner, memory_id, keys_only=True)]
            batch_delete(self._client, self._table, keys, sleep=self._sleep)
        except UpstreamUnavailable:
            log.warning("earlier versions of a deleted memory not deleted: a forget removes them")
        return True

    # -- reads ----------------------------------------------------------------------------------

    def get(self, owner: str, memory_id: str) -> Memory | None:
        item = self._get_item(owner, memory_id)
        return None if item is None else self.from_item(owner, item)

    def _get_item(self, owner: str, memory_id: str) -> dict[str, Any] | None:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table, Key=self._key(owner, memory_id), ConsistentRead=True
            )
        return response.get("Item")

    def get_many(self, owner: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        return {item["id"]["S"]: self.from_item(owner, item) for item in self._batch_get(owner, memory_ids)}

    def _batch_get(self, owner: str, memory_ids: Sequence[str], *, projection: str | None = None) -> Iterator[Any]:
        keys = [self._key(owner, memory_id) for memory_id in dict.fromkeys(memory_ids)]
        return batch_get(self._client, self._table, keys, projection=projection, sleep=self._sleep)

    def history(self, owner: str, memory_id: str) -> list[MemoryVersion] | None:
        current = self._get_item(owner, memory_id)
        if current is None:
            return None
        memory = self.from_item(owner, current)
        past = [
            past_from_item(self._cipher, self._context_name, owner, i) for i in self._history_items(owner, memory_id)
        ]
        return _versions(past, memory, reason_from_item(self._cipher, self._context_name, owner, current))

    def _history_items(self, owner: str, memory_id: str, *, keys_only: bool = False) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner AND begins_with(id, :prefix)",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {
                ":owner": {"S": owner + HISTORY_SUFFIX},
                ":prefix": {"S": history_prefix(memory_id)},
            },
            "ConsistentRead": True,
        }
        if keys_only:
            query["ProjectionExpression"] = "#owner, id"
        return query_items(self._client, query)

    def page(
        self, owner: str, *, category: str | None, limit: int, cursor: str | None, origin: Origin | None = None
    ) -> MemoryPage:
        """Newest first. With `origin`, the items read are filtered (a FilterExpression on the plain
        `origin` attribute): pages are filled up to `limit` by reading on, but at most
        _ORIGIN_LISTING_PAGES x `limit` items are read per request, so a page can hold fewer than
        `limit` items (even none) and still carry a cursor: more may follow until the cursor is null."""
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
        if origin is not None:
            # Memories stored before origins were recorded came through the API.
            query["FilterExpression"] = "#origin = :origin" + (
                " OR attribute_not_exists(#origin)" if origin == "api" else ""
            )
            query.setdefault("ExpressionAttributeNames", {})["#origin"] = "origin"
            query["ExpressionAttributeValues"][":origin"] = {"S": origin}
        if cursor is not None:
            query["ExclusiveStartKey"] = self._start_key(owner, category, cursor)
        items: list[dict[str, Any]] = []
        last: dict[str, Any] | None = None
        for _ in range(_ORIGIN_LISTING_PAGES if origin is not None else 1):
            try:
                with translated_aws_errors("DynamoDB"):
                    response = self._client.query(**query)
            except ClientError as exc:
                # Every other input of this Query is ours; a start key DynamoDB refuses came from the caller.
                if cursor is not None and error_code(exc) == "ValidationException":
                    raise InvalidInput(NOT_OURS, field="cursor") from exc
                raise
            found = response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if len(items) + len(found) >= limit and (len(items) + len(found) > limit or last):
                # Full: go on after the last item returned (its key is a cursor like any other).
                items += found[: limit - len(items)]
                last = items[-1]
                break
            items += found
            if not last:
                break
            query["ExclusiveStartKey"] = last
        next_cursor = None
        if last:
            ts = int(last["timestamp"]["N"]) if category is not None else None
            next_cursor = encode_cursor(CursorPosition(id=last["id"]["S"], ts=ts))
        return MemoryPage(items=[self.from_item(owner, item) for item in items], cursor=next_cursor)

    # -- what a search index reads (pai_core.ports.IndexSource, kind "memory") -------------------

    def vectors(self, owner: str) -> Iterator[IndexedItem]:
        """Every memory as a search index holds it: the design's read per search (eventually consistent)."""
        return self._indexed_query(owner, consistent=False)

    def all_items(self, owner: str) -> Iterator[IndexedItem]:
        return self._indexed_query(owner, consistent=True)

    def items_by_id(self, owner: str, ids: Sequence[str]) -> Iterator[IndexedItem]:
        """The current state of these memories, read by key; a memory that is gone is not returned."""
        for item in self._batch_get(owner, ids, projection=INDEX_PROJECTION):
            yield indexed_from_item(self._cipher, self._context_name, owner, item)

    def _indexed_query(self, owner: str, *, consistent: bool) -> Iterator[IndexedItem]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ProjectionExpression": INDEX_PROJECTION,
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ConsistentRead": consistent,
        }
        for item in query_items(self._client, query):
            yield indexed_from_item(self._cipher, self._context_name, owner, item)

    # -- a user's whole account (pai_core.ports.MemoryArchive) ------------------------------------

    def all_memories(self, owner: str) -> Iterator[Memory]:
        """The current memories (earlier versions: all_histories)."""
        for item in query_items(self._client, self._partition_query(owner)):
            yield self.from_item(owner, item)

    def all_histories(self, owner: str) -> dict[str, list[MemoryVersion]]:
        """Every version, oldest first, of each memory that was ever updated, by memory id (a
        memory never updated has one version, itself, and is not listed)."""
        past: dict[str, list[PastVersion]] = {}
        for item in query_items(self._client, self._partition_query(owner + HISTORY_SUFFIX)):
            version = past_from_item(self._cipher, self._context_name, owner, item)
            past.setdefault(version.memory_id, []).append(version)
        histories: dict[str, list[MemoryVersion]] = {}
        for item in self._batch_get(owner, list(past)):
            memory = self.from_item(owner, item)
            reason = reason_from_item(self._cipher, self._context_name, owner, item)
            histories[memory.id] = _versions(past[memory.id], memory, reason)
        return histories

    def purge(self, owner: str) -> int:
        """Delete the owner's memories, their earlier versions and the change log's entries (the
        head stays: see DynamoChangeLog.purge); how many memories."""
        memories = 0
        for partition in (owner, owner + HISTORY_SUFFIX, owner + LEGACY_DELETED_SUFFIX):
            query = self._partition_query(partition)
            query["ProjectionExpression"] = "#owner, id"
            keys = [{"owner": item["owner"], "id": item["id"]} for item in query_items(self._client, query)]
            batch_delete(self._client, self._table, keys, sleep=self._sleep)
            if partition == owner:
                memories = len(keys)
        self._changes.purge(owner)
        return memories

    # -- keys -------------------------------------------------------------------------------------

    def _partition_query(self, partition: str) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": partition}},
            "ConsistentRead": True,
        }

    def _key(self, owner: str, memory_id: str) -> Item:
        return {"owner": {"S": owner}, "id": {"S": memory_id}}

    def _start_key(self, owner: str, category: str | None, cursor: str) -> Item:
        position = decode_cursor(cursor, category_listing=category is not None)
        key = self._key(owner, position.id)
        if category is not None:
            key["ownerCategory"] = {"S": owner_category(owner, category)}
            key["timestamp"] = {"N": str(position.ts)}
        return key


def _versions(past: list[PastVersion], current: Memory, current_reason: str | None) -> list[MemoryVersion]:
    """Earlier versions and the current one as a history: each valid until the next one began."""
    ordered = sorted(past, key=lambda version: version.version)
    starts = [version.valid_from for version in ordered] + [current.last_changed]
    versions = [
        MemoryVersion(
            content=version.content,
            category=version.category,
            metadata=version.metadata,
            valid_from=version.valid_from,
            valid_to=starts[position + 1],
            reason=version.reason,
        )
        for position, version in enumerate(ordered)
    ]
    versions.append(MemoryVersion.current(current, current_reason))
    return versions
