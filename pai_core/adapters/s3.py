"""S3 as the store of search-index snapshots: one envelope-encrypted object per owner.

The object is encrypted here, before it leaves the process, like every other stored value (the
bucket's own SSE-KMS is a second layer, not the one we rely on). Its encryption context binds it to
the bucket, the owner, the object key and its purpose, so a snapshot copied to another owner's key,
or read as something else, fails to decrypt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

SNAPSHOT_PREFIX = "index/"
_SNAPSHOT_ATTRIBUTE = "search-index-snapshot"
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3SnapshotStore:
    def __init__(self, client: S3Client, bucket: str, cipher: EnvelopeCipher, *, prefix: str = SNAPSHOT_PREFIX) -> None:
        self._client = client
        self._bucket = bucket
        self._cipher = cipher
        self._prefix = prefix

    def key(self, owner: str) -> str:
        return f"{self._prefix}{owner}.snapshot"

    def _context(self, owner: str) -> RecordContext:
        return RecordContext(
            partition={"bucket": self._bucket, "owner": owner},
            record={"key": self.key(owner), "attribute": _SNAPSHOT_ATTRIBUTE},
        )

    def load(self, owner: str) -> bytes | None:
        try:
            with translated_aws_errors("S3"):
                response = self._client.get_object(Bucket=self._bucket, Key=self.key(owner))
                sealed = response["Body"].read()
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise UpstreamUnavailable(f"S3 refused the index snapshot read ({error_code(exc)})") from exc
        return self._cipher.decrypt(sealed, self._context(owner))

    def purge(self, owner: str) -> int:
        """Delete every version and delete marker of the owner's snapshot; how many went."""
        try:
            with translated_aws_errors("S3"):
                return delete_versions(self._client, self._bucket, key=self.key(owner))
        except ClientError as exc:
            raise UpstreamUnavailable(f"S3 refused deleting the index snapshot ({error_code(exc)})") from exc

    def save(self, owner: str, payload: bytes) -> None:
        """A snapshot re-seals what is already sealed under the owner's key: it never makes one. An
        owner forgotten meanwhile has none, and gets KeyMaterialDestroyed instead of a fresh key."""
        sealed = self._cipher.encrypt(payload, self._context(owner), create_key=False)
        try:
            with translated_aws_errors("S3"):
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=self.key(owner),
                    Body=sealed,
                    ContentType="application/octet-stream",
                )
        except ClientError as exc:
            raise UpstreamUnavailable(f"S3 refused the index snapshot write ({error_code(exc)})") from exc


def delete_versions(client: S3Client, bucket: str, *, key: str | None = None) -> int:
    """Delete every version and delete marker of `key` (of the whole bucket when None); how many
    went. A versioned bucket keeps a deleted object's bytes until its versions are gone."""
    doomed: list[ObjectIdentifierTypeDef] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key or ""):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if key is None or entry["Key"] == key:  # a prefix also matches longer keys
                doomed.append({"Key": entry["Key"], "VersionId": entry["VersionId"]})
    for start in range(0, len(doomed), 1000):
        response = client.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True})
        if response.get("Errors"):
            raise UpstreamUnavailable(f"S3 did not delete every version in {bucket}; run the deletion again")
    return len(doomed)
