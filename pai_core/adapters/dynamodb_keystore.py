"""Table `pai-keystore-{env}`: the KMS-wrapped branch keys of every user.

    owner (hash) | version (range)
    alice        | active        keyVersion, wrappedKey   the version new records are sealed under
    alice        | v0000000001   keyVersion, wrappedKey, createdAt
    alice        | v0000000002   ...                      (after a rotation)
    bob          | retired       retiredThrough           the highest version of bob's ever destroyed

The `active` item repeats the wrapped key of its version, so sealing costs one GetItem per user and
cache lifetime. Writing a version and moving `active` to it is one transaction, conditional on the
version it replaces, so two containers racing to make or rotate a user's key cannot both win.

Destroying an owner's keys (a forget) first records the highest version destroyed in `retired`,
which holds no secret and stays, then deletes every key item. A first key is made past it (one
GetItem when a user's first key is made), and its transaction checks `retired` again, so a version
number never names two keys, even with a forget racing the making of a key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.adapters.dynamodb_pages import batch_delete, query_items
from pai_core.crypto import WrappedBranchKey
from pai_core.models import iso_utc
from pai_core.ports import Clock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ACTIVE = "active"
RETIRED = "retired"


def version_key(version: int) -> str:
    return f"v{version:010d}"


class DynamoBranchKeyStore:
    def __init__(self, client: DynamoDBClient, table: str, *, clock: Clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def active(self, owner: str) -> WrappedBranchKey | None:
        return self._read(owner, ACTIVE)

    def get(self, owner: str, version: int) -> WrappedBranchKey | None:
        return self._read(owner, version_key(version))

    def first_version(self, owner: str) -> int:
        return self._retired_through(owner) + 1

    def activate(self, key: WrappedBranchKey, *, replacing: int | None) -> bool:
        owner = {"S": key.owner}
        version = {"N": str(key.version)}
        wrapped = {"B": key.wrapped}
        active_put: dict[str, Any] = {
            "TableName": self._table,
            "Item": {"owner": owner, "version": {"S": ACTIVE}, "keyVersion": version, "wrappedKey": wrapped},
        }
        if replacing is None:
            active_put["ConditionExpression"] = "attribute_not_exists(#owner)"
            active_put["ExpressionAttributeNames"] = {"#owner": "owner"}
        else:
            active_put["ConditionExpression"] = "keyVersion = :replacing"
            active_put["ExpressionAttributeValues"] = {":replacing": {"N": str(replacing)}}
        version_put: dict[str, Any] = {
            "TableName": self._table,
            "Item": {
                "owner": owner,
                "version": {"S": version_key(key.version)},
                "keyVersion": version,
                "wrappedKey": wrapped,
                "createdAt": {"S": iso_utc(self._clock.now())},
            },
            "ConditionExpression": "attribute_not_exists(#owner)",
            "ExpressionAttributeNames": {"#owner": "owner"},
        }
        writes: list[dict[str, Any]] = [{"Put": version_put}, {"Put": active_put}]
        if replacing is None:
            # Never a version a destroyed key had: `retired` may have moved since first_version read it.
            writes.append(
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": {"owner": owner, "version": {"S": RETIRED}},
                        "ConditionExpression": "attribute_not_exists(#through) OR #through < :version",
                        "ExpressionAttributeNames": {"#through": "retiredThrough"},
                        "ExpressionAttributeValues": {":version": version},
                    }
                }
            )
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.transact_write_items(TransactItems=writes)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                return False
            raise
        return True

    def destroy(self, owner: str) -> int:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner", "#version": "version", "#key": "keyVersion"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ProjectionExpression": "#owner, #version, #key",
            "ConsistentRead": True,
        }
        items = [item for item in query_items(self._client, query) if item["version"]["S"] != RETIRED]
        highest = max((int(item["keyVersion"]["N"]) for item in items if "keyVersion" in item), default=0)
        if highest:
            self._retire_through(owner, highest)  # before the keys go: a key made meanwhile starts past it
        batch_delete(
            self._client, self._table, [{"owner": item["owner"], "version": item["version"]} for item in items]
        )
        return len(items)

    def _retire_through(self, owner: str, version: int) -> None:
        try:
            with translated_aws_errors("DynamoDB"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"owner": {"S": owner}, "version": {"S": RETIRED}},
                    UpdateExpression="SET #through = :version",
                    ConditionExpression="attribute_not_exists(#through) OR #through < :version",
                    ExpressionAttributeNames={"#through": "retiredThrough"},
                    ExpressionAttributeValues={":version": {"N": str(version)}},
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Already recorded at or past this version: nothing to move.

    def _retired_through(self, owner: str) -> int:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table,
                Key={"owner": {"S": owner}, "version": {"S": RETIRED}},
                ConsistentRead=True,
            )
        item = response.get("Item") or {}
        return int(item["retiredThrough"]["N"]) if "retiredThrough" in item else 0

    def _read(self, owner: str, sort_key: str) -> WrappedBranchKey | None:
        with translated_aws_errors("DynamoDB"):
            response = self._client.get_item(
                TableName=self._table,
                Key={"owner": {"S": owner}, "version": {"S": sort_key}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        if item is None:
            return None
        return WrappedBranchKey(owner=owner, version=int(item["keyVersion"]["N"]), wrapped=item["wrappedKey"]["B"])
