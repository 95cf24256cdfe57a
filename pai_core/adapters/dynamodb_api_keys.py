"""The API keys table (`pai-api-keys-{env}`): one item per key.

    keyId (hash)   the key's public id                 userId      whose key it is
    digest         SHA-256 of the key (binary)         label       the owner's note
    createdAt      ISO 8601 UTC                        revokedAt   set once, when revoked

GSI `user-index` (userId hash, createdAt range) projects the key id, label and revokedAt only:
the digests stay out of the index.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.auth import ApiKeyInfo, StoredApiKey
from pai_core.errors import Conflict
from pai_core.models import iso_utc, parse_iso_utc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

USER_INDEX = "user-index"
_SERVICE = "DynamoDB"


class DynamoApiKeyStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def add(self, key: StoredApiKey) -> None:
        info = key.info
        item: dict[str, Any] = {
            "keyId": {"S": info.key_id},
            "userId": {"S": info.user_id},
            "digest": {"B": key.digest},
            "label": {"S": info.label},
            "createdAt": {"S": iso_utc(info.created_at)},
        }
        if info.revoked_at is not None:
            item["revokedAt"] = {"S": iso_utc(info.revoked_at)}
        try:
            with translated_aws_errors(_SERVICE):
                self._client.put_item(
                    TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(keyId)"
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise Conflict("an API key with this id exists") from exc
            raise

    def get(self, key_id: str) -> StoredApiKey | None:
        # Strongly consistent: a key works the moment it is issued and stops the moment it is revoked.
        with translated_aws_errors(_SERVICE):
            item = self._client.get_item(TableName=self._table, Key={"keyId": {"S": key_id}}, ConsistentRead=True).get(
                "Item"
            )
        if item is None:
            return None
        return StoredApiKey(_info(item), bytes(item["digest"]["B"]))

    def for_user(self, user_id: str) -> Iterator[ApiKeyInfo]:
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            IndexName=USER_INDEX,
            KeyConditionExpression="userId = :user",
            ExpressionAttributeValues={":user": {"S": user_id}},
        )
        yield from self._items(pages)

    def every_key(self) -> Iterator[ApiKeyInfo]:
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table, ProjectionExpression="keyId, userId, label, createdAt, revokedAt"
        )
        yield from self._items(pages)

    def revoke(self, key_id: str, *, at: datetime) -> ApiKeyInfo | None:
        try:
            with translated_aws_errors(_SERVICE):
                updated = self._client.update_item(
                    TableName=self._table,
                    Key={"keyId": {"S": key_id}},
                    UpdateExpression="SET revokedAt = if_not_exists(revokedAt, :at)",
                    ConditionExpression="attribute_exists(keyId)",
                    ExpressionAttributeValues={":at": {"S": iso_utc(at)}},
                    ReturnValues="ALL_NEW",
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _info(updated["Attributes"])

    @staticmethod
    def _items(pages: Any) -> Iterator[ApiKeyInfo]:
        with translated_aws_errors(_SERVICE):
            for page in pages:
                for item in page.get("Items", []):
                    yield _info(item)


def _info(item: dict[str, Any]) -> ApiKeyInfo:
    revoked = item.get("revokedAt")
    return ApiKeyInfo(
        key_id=item["keyId"]["S"],
        user_id=item["userId"]["S"],
        label=item.get("label", {}).get("S", ""),
        created_at=parse_iso_utc(item["createdAt"]["S"]),
        revoked_at=parse_iso_utc(revoked["S"]) if revoked is not None else None,
    )
