"""DynamoDB repository of the knowledge base's documents and passages, in the knowledge table
(`pai-knowledge-{env}`), beside the memories, under partitions of their own:

    {owner}#documents / <document id>       the document's metadata (pai_core.adapters.document_codec)
    {owner}#passages  / <doc id>#<number>   its passages, sealed with their embeddings
    {owner}#docstats  / totals              documents, bytes and passages held (ADD on upload/delete)
    {owner}#docstats  / print#<fingerprint> the document holding those bytes (duplicate uploads)

The knowledge table rather than a table of their own: passages join memories in one search index
kept current by the one per-owner change log that lives there; the search and chat functions
already read it by key and Query, and forgetting a user already walks their partitions in it. Owners
never contain '#', so no partition here can be another owner's. Every read is a key lookup or a
Query inside the caller's own partitions: no Scan.

Writes land in an order that keeps every failure invisible: passages first, then the document item
(what makes them visible: search keeps a passage only when its document is there and ready), then the
change-log entries. A document ingested off the request path (pai_core.services.documents) is written
first, "processing", with its fingerprint and totals; the ingest function writes its passages, then
turns it ready (conditionally: a document deleted meanwhile stays deleted) and records the change-log
entries, or marks it failed and removes what it wrote. A delete removes the document item first (at
once invisible everywhere), then the passages, then records the deletes so every warm index drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.adapters.document_codec import (
    DOCUMENTS_SUFFIX,
    PASSAGE_INDEX_PROJECTION,
    PASSAGES_SUFFIX,
    document_from_item,
    document_item,
    indexed_passage_from_item,
    passage_from_item,
    passage_item,
    status_from_item,
)
from pai_core.adapters.dynamodb_changelog import DynamoChangeLog
from pai_core.adapters.dynamodb_cursors import NOT_OURS, CursorPosition, decode_cursor, encode_cursor
from pai_core.adapters.dynamodb_pages import Item, Sleep, batch_delete, batch_get, batch_write, query_items
from pai_core.crypto import EnvelopeCipher
from pai_core.deadline import remaining_seconds, request_deadline
from pai_core.documents.records import Document, DocumentPage, DocumentTotals, StoredPassage
from pai_core.errors import Conflict, InvalidInput, UpstreamUnavailable
from pai_core.models import ChangeOp, IndexedItem, ItemRef
from pai_core.search.changes import WRITE_LANDS_WITHIN_SECONDS

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

STATS_SUFFIX = "#docstats"
ANNOUNCE_SECONDS = WRITE_LANDS_WITHIN_SECONDS / 3
TOTALS_ID = "totals"
PRINT_PREFIX = "print#"


class DynamoDocumentRepository:
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

    # -- writes ---------------------------------------------------------------------------------

    def add(
        self, owner: str, document: Document, passages: Sequence[tuple[StoredPassage, bytes]], *, fingerprint: str
    ) -> None:
        """Stores the passages (each with its vector, little-endian float32 bytes), then the
        document, then its fingerprint and the owner's totals, then the change-log entries."""
        requests: list[Any] = [
            {"PutRequest": {"Item": passage_item(self._cipher, self._context_name, owner, p, vector=v)}}
            for p, v in passages
        ]
        batch_write(self._client, self._table, requests, sleep=self._sleep)
        self._put_document(document_item(self._cipher, self._context_name, owner, document, fingerprint=fingerprint))
        with translated_aws_errors("DynamoDB"):
            self._client.put_item(
                TableName=self._table,
                Item={**self._print_key(owner, fingerprint), "documentId": {"S": document.id}},
            )
        self._add_totals(owner, documents=1, size=document.bytes, passages=len(passages))
        self._changes.record(owner, [("put", ItemRef("passage", p.id)) for p, _ in passages])

    def add_processing(self, owner: str, document: Document, *, fingerprint: str) -> None:
        """The document of an upload to be ingested off the request path, with no passages yet;
        its fingerprint and its share of the totals (its expected passages) at once."""
        item = document_item(self._cipher, self._context_name, owner, document, fingerprint=fingerprint)
        self._put_document(item)
        with translated_aws_errors("DynamoDB"):
            self._client.put_item(
                TableName=self._table,
                Item={**self._print_key(owner, fingerprint), "documentId": {"S": document.id}},
            )
        self._add_totals(owner, documents=1, size=document.bytes, passages=document.passages)

    def put_passages(self, owner: str, passages: Sequence[tuple[StoredPassage, bytes]]) -> None:
        """Passages of a document being ingested: invisible until it is ready (a put again is the same item)."""
        requests: list[Any] = [
            {"PutRequest": {"Item": passage_item(self._cipher, self._context_name, owner, p, vector=v)}}
            for p, v in passages
        ]
        batch_write(self._client, self._table, requests, sleep=self._sleep)

    def mark_ready(self, owner: str, document_id: str, passage_ids: Sequence[str]) -> bool:
        """The processing document turns ready with these passages (already put), and every warm index
        hears of them; False when it is not there or not processing (deleted meanwhile, say)."""
        try:
            with translated_aws_errors("DynamoDB"):
                response = self._client.update_item(
                    TableName=self._table,
                    Key=self._document_key(owner, document_id),
                    UpdateExpression="SET passages = :n REMOVE #status, failure",
                    ConditionExpression="attribute_exists(id) AND #status = :processing",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":n": {"N": str(len(passage_ids))}, ":processing": {"S": "processing"}},
                    ReturnValues="ALL_OLD",
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        expected = int(response["Attributes"]["passages"]["N"])
        if expected != len(passage_ids):
            self._add_totals(owner, documents=0, size=0, passages=len(passage_ids) - expected)
        self.announce(owner, passage_ids)
        return True

    def announce(self, owner: str, passage_ids: Sequence[str]) -> None:
        """Change-log entries for passages now searchable (again: a put twice is harmless).

        The ingest function runs far longer than a change-log entry may take to land after its id is
        made (WRITE_LANDS_WITHIN_SECONDS, which warm indexes' id margin covers), so the entries are
        written under a deadline of their own, well inside that: entries not written by then are
        seen at the indexes' next full reload, like any change-log write that fails."""
        remaining = remaining_seconds()
        seconds = ANNOUNCE_SECONDS if remaining is None else min(remaining, ANNOUNCE_SECONDS)
        with request_deadline(seconds):
            self._changes.record(owner, [("put", ItemRef("passage", i)) for i in passage_ids])

    def mark_failed(self, owner: str, document_id: str, reason: str) -> bool:
        """The processing document turns failed with this reason and holds no passages; False when it
        is not there or not processing."""
        try:
            with translated_aws_errors("DynamoDB"):
                response = self._client.update_item(
                    TableName=self._table,
                    Key=self._document_key(owner, document_id),
                    UpdateExpression="SET #status = :failed, failure = :reason, passages = :zero",
                    ConditionExpression="attribute_exists(id) AND #status = :processing",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={
                        ":failed": {"S": "failed"},
                        ":reason": {"S": reason},
                        ":zero": {"N": "0"},
                        ":processing": {"S": "processing"},
                    },
                    ReturnValues="ALL_OLD",
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        self._add_totals(owner, documents=0, size=0, passages=-int(response["Attributes"]["passages"]["N"]))
        return True

    def remove_passages(self, owner: str, document_id: str) -> int:
        """Every passage item of the document (of an ingestion that failed or whose document was
        deleted meanwhile: never announced, so no change-log entry); how many."""
        keys = [{"owner": i["owner"], "id": i["id"]} for i in self._passage_items(owner, document_id, keys_only=True)]
        batch_delete(self._client, self._table, keys, sleep=self._sleep)
        return len(keys)

    def _put_document(self, item: Item) -> None:
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(id)")
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise Conflict("a document with this id already exists") from exc
            raise

    def delete(self, owner: str, document_id: str) -> Document | None:
        """The document as it was, None when there was none. Nothing of it is returned by any
        read once this begins: the document item goes first."""
        try:
            with translated_aws_errors("DynamoDB"):
                response = self._client.delete_item(
                    TableName=self._table,
                    Key=self._document_key(owner, document_id),
                    ConditionExpression="attribute_exists(id)",
                    ReturnValues="ALL_OLD",
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        old = response["Attributes"]
        document = document_from_item(self._cipher, self._context_name, owner, old)
        keys = [{"owner": i["owner"], "id": i["id"]} for i in self._passage_items(owner, document_id, keys_only=True)]
        batch_delete(self._client, self._table, keys, sleep=self._sleep)
        deletes: list[tuple[ChangeOp, ItemRef]] = [("delete", ItemRef("passage", k["id"]["S"])) for k in keys]
        self._changes.record(owner, deletes)
        fingerprint = old.get("fingerprint", {}).get("S")
        try:
            if fingerprint:
                with translated_aws_errors("DynamoDB"):
                    self._client.delete_item(
                        TableName=self._table,
                        Key=self._print_key(owner, fingerprint),
                        ConditionExpression="documentId = :id",
                        ExpressionAttributeValues={":id": {"S": document_id}},
                    )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        # What the upload (or the ingestion's end) added: a failed document's passages are gone already.
        self._add_totals(owner, documents=-1, size=-document.bytes, passages=-document.passages)
        return document

    def _add_totals(self, owner: str, *, documents: int, size: int, passages: int) -> None:
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"owner": {"S": owner + STATS_SUFFIX}, "id": {"S": TOTALS_ID}},
                    UpdateExpression="ADD documents :d, #bytes :b, passages :p",
                    ExpressionAttributeNames={"#bytes": "bytes"},
                    ExpressionAttributeValues={
                        ":d": {"N": str(documents)},
                        ":b": {"N": str(size)},
                        ":p": {"N": str(passages)},
                    },
                )
        except UpstreamUnavailable:
            log.warning("document totals not updated: the owner's bounds are off by one document")

    # -- reads ----------------------------------------------------------------------------------

    def get(self, owner: str, document_id: str) -> Document | None:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table, Key=self._document_key(owner, document_id), ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else document_from_item(self._cipher, self._context_name, owner, item)

    def by_fingerprint(self, owner: str, fingerprint: str) -> Document | None:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table, Key=self._print_key(owner, fingerprint), ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else self.get(owner, item["documentId"]["S"])

    def totals(self, owner: str) -> DocumentTotals:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table,
                Key={"owner": {"S": owner + STATS_SUFFIX}, "id": {"S": TOTALS_ID}},
                ConsistentRead=True,
            )
        item = response.get("Item") or {}

        def count(name: str) -> int:
            return max(0, int(item[name]["N"])) if name in item else 0

        return DocumentTotals(documents=count("documents"), bytes=count("bytes"), passages=count("passages"))

    def page(self, owner: str, *, limit: int, cursor: str | None) -> DocumentPage:
        """Newest first (ids are time-ordered)."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner + DOCUMENTS_SUFFIX}},
            "ScanIndexForward": False,
            "Limit": limit,
            "ConsistentRead": True,
        }
        if cursor is not None:
            position = decode_cursor(cursor, category_listing=False)
            query["ExclusiveStartKey"] = self._document_key(owner, position.id)
        try:
            with translated_aws_errors("DynamoDB"):
                response = self._client.query(**query)
        except ClientError as exc:
            if cursor is not None and error_code(exc) == "ValidationException":
                raise InvalidInput(NOT_OURS, field="cursor") from exc
            raise
        last = response.get("LastEvaluatedKey")
        items = [document_from_item(self._cipher, self._context_name, owner, i) for i in response.get("Items", [])]
        next_cursor = encode_cursor(CursorPosition(id=last["id"]["S"])) if last else None
        return DocumentPage(items=items, cursor=next_cursor)

    def documents_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, Document]:
        keys = [self._document_key(owner, i) for i in dict.fromkeys(ids)]
        return {
            item["id"]["S"]: document_from_item(self._cipher, self._context_name, owner, item)
            for item in self._batch_get(keys)
        }

    def passages_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, StoredPassage]:
        keys = [self._passage_key(owner, i) for i in dict.fromkeys(ids)]
        return {
            item["id"]["S"]: passage_from_item(self._cipher, self._context_name, owner, item)
            for item in self._batch_get(keys)
        }

    def _passage_items(self, owner: str, document_id: str, *, keys_only: bool = False) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner AND begins_with(id, :prefix)",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {
                ":owner": {"S": owner + PASSAGES_SUFFIX},
                ":prefix": {"S": document_id + "#"},
            },
            "ConsistentRead": True,
        }
        if keys_only:
            query["ProjectionExpression"] = "#owner, id"
        return query_items(self._client, query)

    def _batch_get(self, keys: list[Item], *, projection: str | None = None) -> Iterator[dict[str, Any]]:
        return batch_get(self._client, self._table, keys, projection=projection, sleep=self._sleep)

    # -- what a search index reads (pai_core.ports.IndexSource, kind "passage") -------------------

    def all_items(self, owner: str) -> Iterator[IndexedItem]:
        """Every passage whose document is there and ready (a passage left by an upload that failed
        half-way, or of a document still being ingested, is not)."""
        query = self._keys_query(owner + DOCUMENTS_SUFFIX)
        query["ProjectionExpression"] = "#owner, id, #status"
        query["ExpressionAttributeNames"]["#status"] = "status"
        documents = {item["id"]["S"] for item in query_items(self._client, query) if status_from_item(item) == "ready"}
        query = self._keys_query(owner + PASSAGES_SUFFIX)
        query["ProjectionExpression"] = PASSAGE_INDEX_PROJECTION
        for item in query_items(self._client, query):
            if item["id"]["S"].split("#", 1)[0] in documents:
                yield indexed_passage_from_item(self._cipher, self._context_name, owner, item)

    def items_by_id(self, owner: str, ids: Sequence[str]) -> Iterator[IndexedItem]:
        keys = [self._passage_key(owner, i) for i in dict.fromkeys(ids)]
        for item in self._batch_get(keys, projection=PASSAGE_INDEX_PROJECTION):
            yield indexed_passage_from_item(self._cipher, self._context_name, owner, item)

    # -- a user's whole account ------------------------------------------------------------------

    def purge(self, owner: str) -> int:
        """Delete every document, passage, fingerprint and total of the owner; how many documents."""
        documents = 0
        for suffix in (DOCUMENTS_SUFFIX, PASSAGES_SUFFIX, STATS_SUFFIX):
            keys = [
                {"owner": i["owner"], "id": i["id"]}
                for i in query_items(self._client, self._keys_query(owner + suffix))
            ]
            batch_delete(self._client, self._table, keys, sleep=self._sleep)
            if suffix == DOCUMENTS_SUFFIX:
                documents = len(keys)
        return documents

    # -- keys -------------------------------------------------------------------------------------

    def _keys_query(self, partition: str) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ProjectionExpression": "#owner, id",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": partition}},
            "ConsistentRead": True,
        }

    def _document_key(self, owner: str, document_id: str) -> Item:
        return {"owner": {"S": owner + DOCUMENTS_SUFFIX}, "id": {"S": document_id}}

    def _passage_key(self, owner: str, passage_id: str) -> Item:
        return {"owner": {"S": owner + PASSAGES_SUFFIX}, "id": {"S": passage_id}}

    def _print_key(self, owner: str, fingerprint: str) -> Item:
        return {"owner": {"S": owner + STATS_SUFFIX}, "id": {"S": PRINT_PREFIX + fingerprint}}
