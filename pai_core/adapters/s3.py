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
        key = self.key(owner)
        versions: list[ObjectIdentifierTypeDef] = []
        try:
            with translated_aws_errors("S3"):
                pages = self._client.get_paginator("list_object_versions").paginate(Bucket=self._bucket, Prefix=key)
                for page in pages:
                    for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                        if entry["Key"] == key:  # the prefix also matches longer owners' keys
                            versions.append({"Key": key, "VersionId": entry["VersionId"]})
                for start in range(0, len(versions), 1000):
                    response = self._client.delete_objects(
                        Bucket=self._bucket, Delete={"Objects": versions[start : start + 1000], "Quiet": True}
                    )
                    if response.get("Errors"):
                        raise UpstreamUnavailable("S3 did not delete every snapshot version; forget the user again")
        except ClientError as exc:
            raise UpstreamUnavailable(f"S3 refused deleting the index snapshot ({error_code(exc)})") from exc
        return len(versions)

    def save(self, owner: str, payload: bytes) -> None:
        sealed = self._cipher.encrypt(payload, self._context(owner))
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
