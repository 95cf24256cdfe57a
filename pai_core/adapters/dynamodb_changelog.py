"""Each owner's change log in the knowledge table: what a search index reads to stay current.

    {owner}#changes / head        `version` (ADD 1 after every change has landed) and `generation`
                                  (ADD 1 by every forget): one GetItem per warm search reads both
    {owner}#changes / <entry id>  `op` (put | update | delete), `kind` (memory | passage), `itemId`,
                                  `ttl`: one per changed item, ids time-ordered (pai_core.ids)

An entry holds no user content: an op, a kind and an id. Entries are read with a key-range Query
past an index's position; entry ids are hex, so they all sort below "head". Owners never contain
'#' (see config), so these partitions cannot collide with a real owner's, and listing (the owner's
own partition, the category GSI, whose keys entries lack) never sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from pai_core.adapters.aws_errors import translated_aws_errors
from pai_core.adapters.dynamodb_pages import Item, Sleep, batch_delete, batch_write, query_items
from pai_core.errors import UpstreamUnavailable
from pai_core.ids import ID_HEX_CHARS, MemoryIds
from pai_core.models import ChangeEntry, ChangeOp, ChangeStamp, ItemKind, ItemRef
from pai_core.ports import Clock
from pai_core.search.changes import CHANGE_ENTRY_TTL_SECONDS

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

CHANGES_SUFFIX = "#changes"
HEAD_ID = "head"
_HIGHEST_ENTRY_ID = "f" * ID_HEX_CHARS
_OPS: frozenset[str] = frozenset({"put", "update", "delete"})
_KINDS: frozenset[str] = frozenset({"memory", "passage"})


class DynamoChangeLog:
    def __init__(self, client: DynamoDBClient, table: str, *, clock: Clock, sleep: Sleep) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._sleep = sleep
        self._ids = MemoryIds()

    def _head_key(self, owner: str) -> Item:
        return {"owner": {"S": owner + CHANGES_SUFFIX}, "id": {"S": HEAD_ID}}

    # -- writing ----------------------------------------------------------------------------------

    def record(self, owner: str, changes: Sequence[tuple[ChangeOp, ItemRef]]) -> None:
        """Called once the changes themselves have landed: one entry per change, then the head moves.

        Not one transaction with the change on purpose: moto copies the whole table for every
        TransactWriteItems (seconds at 10K memories, past the client's timeout), and the local stack
        runs on moto. The order makes a failure here harmless to correctness: the change is durable,
        search results are always fetched by key, and warm indexes elsewhere see it at their periodic
        full reload (or at the next change, for an entry written whose head did not move)."""
        if not changes:
            return
        now = self._clock.now()
        expires = str(int(now.timestamp()) + CHANGE_ENTRY_TTL_SECONDS)
        items: list[Item] = [
            {
                "owner": {"S": owner + CHANGES_SUFFIX},
                "id": {"S": self._ids(now)},
                "op": {"S": op},
                "kind": {"S": ref.kind},
                "itemId": {"S": ref.id},
                "ttl": {"N": expires},
            }
            for op, ref in changes
        ]
        try:
            if len(items) == 1:
                with translated_aws_errors("DynamoDB"):
                    self._client.put_item(TableName=self._table, Item=items[0])
            else:
                requests: list[Any] = [{"PutRequest": {"Item": item}} for item in items]
                batch_write(self._client, self._table, requests, sleep=self._sleep)
        except UpstreamUnavailable:
            log.warning("change-log entry not written: warm search indexes see the change at their next reload")
            return
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.update_item(
                    TableName=self._table,
                    Key=self._head_key(owner),
                    UpdateExpression="ADD #version :one",
                    ExpressionAttributeNames={"#version": "version"},
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
        except UpstreamUnavailable:
            log.warning("change stamp not moved: warm search indexes see the change at the next one")

    def move_generation(self, owner: str) -> int:
        """One atomic increment of the head's generation; the new value. Not best-effort like the
        version: a forget must not go on if other containers cannot be told."""
        with translated_aws_errors("DynamoDB"):
            response = self._client.update_item(
                TableName=self._table,
                Key=self._head_key(owner),
                UpdateExpression="ADD #generation :one",
                ExpressionAttributeNames={"#generation": "generation"},
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW",
            )
        generation = int(response["Attributes"]["generation"]["N"])
        if generation < 1:
            raise UpstreamUnavailable("the owner's generation did not move")
        return generation

    def purge(self, owner: str) -> int:
        """Delete every entry of the owner but the head: it holds two counters and nothing of the
        user's, and its generation is what tells other containers' warm indexes that the owner was
        forgotten (read back as 0 if it went). How many entries that was."""
        query = self._range(owner, "", projection="#owner, id")
        keys = [{"owner": item["owner"], "id": item["id"]} for item in query_items(self._client, query)]
        batch_delete(self._client, self._table, keys, sleep=self._sleep)
        return len(keys)

    # -- reading (pai_core.ports.ChangeLog) -------------------------------------------------------

    def change_stamp(self, owner: str) -> ChangeStamp:
        # Both counters live on the one small head item: reading the generation costs no extra unit.
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table,
                Key=self._head_key(owner),
                ProjectionExpression="#version, #generation",
                ExpressionAttributeNames={"#version": "version", "#generation": "generation"},
                ConsistentRead=True,
            )
        item = response.get("Item") or {}
        return ChangeStamp(
            version=int(item["version"]["N"]) if "version" in item else 0,
            generation=int(item["generation"]["N"]) if "generation" in item else 0,
        )

    def changes_after(self, owner: str, after_id: str) -> Iterator[ChangeEntry]:
        """The entries whose id sorts after `after_id`, oldest first (an entry of an op or kind this
        code does not know, written by a newer version, is skipped)."""
        for item in query_items(self._client, self._range(owner, after_id, projection="id, op, kind, itemId")):
            entry_id, op, kind = item["id"]["S"], item["op"]["S"], item["kind"]["S"]
            if entry_id <= after_id:
                continue
            if op not in _OPS or kind not in _KINDS:
                log.warning("skipping a change-log entry of op %r, kind %r", op, kind)
                continue
            yield ChangeEntry(
                id=entry_id, op=cast(ChangeOp, op), ref=ItemRef(cast(ItemKind, kind), item["itemId"]["S"])
            )

    def _range(self, owner: str, after_id: str, *, projection: str) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner AND id BETWEEN :low AND :high",
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {
                ":owner": {"S": owner + CHANGES_SUFFIX},
                ":low": {"S": after_id or "0"},
                ":high": {"S": _HIGHEST_ENTRY_ID},
            },
            "ConsistentRead": True,
        }
