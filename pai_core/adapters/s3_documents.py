"""S3 as the store of the knowledge base's files: per document, the original file and its extracted
text, each sealed here under the owner's branch key before it leaves the process (the bucket's own
SSE-KMS is a second layer, not the one relied on).

    documents/{owner}/{document id}/original   the uploaded bytes
    documents/{owner}/{document id}/text       the text read from them (what an export returns)

Each object's encryption context binds it to the bucket, the owner, the document, the object key and
its purpose, so an object copied to another key, document or owner, or read as the other one, fails
to decrypt. Deleting removes every version and delete marker (the bucket is versioned).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

DOCUMENTS_PREFIX = "documents/"
Purpose = Literal["original", "text"]
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3DocumentStore:
    def __init__(self, client: S3Client, bucket: str, cipher: EnvelopeCipher) -> None:
        self._client = client
        self._bucket = bucket
        self._cipher = cipher

    def key(self, owner: str, document_id: str, purpose: Purpose) -> str:
        return f"{DOCUMENTS_PREFIX}{owner}/{document_id}/{purpose}"

    def _context(self, owner: str, document_id: str, purpose: Purpose) -> RecordContext:
        return RecordContext(
            partition={"bucket": self._bucket, "owner": owner},
            record={
                "key": self.key(owner, document_id, purpose),
                "documentId": document_id,
                "purpose": f"document-{purpose}",
            },
        )

    def put(self, owner: str, document_id: str, purpose: Purpose, payload: bytes) -> None:
        sealed = self._cipher.encrypt(payload, self._context(owner, document_id, purpose))
        try:
            with translated_aws_errors("S3"):
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=self.key(owner, document_id, purpose),
                    Body=sealed,
                    ContentType="application/octet-stream",
                )
        except ClientError as exc:
            raise UpstreamUnavailable(f"S3 refused the document write ({error_code(exc)})") from exc

    def get(self, owner: str, document_id: str, purpose: Purpose) -> bytes | None:
        try:
            with translated_aws_errors("S3"):
                response = self._client.get_object(Bucket=self._bucket, Key=self.key(owner, document_id, purpose))
                sealed = response["Body"].read()
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise UpstreamUnavailable(f"S3 refused the document read ({error_code(exc)})") from exc
        return self._cipher.decrypt(sealed, self._context(owner, document_id, purpose))

    def delete(self, owner: str, document_id: str) -> int:
        """Every version of the document's objects; how many went."""
        return self._delete_prefix(f"{DOCUMENTS_PREFIX}{owner}/{document_id}/")

    def purge(self, owner: str) -> int:
        """Every version of every document object of the owner; how many went."""
        return self._delete_prefix(f"{DOCUMENTS_PREFIX}{owner}/")

    def _delete_prefix(self, prefix: str) -> int:
        # Owners and document ids hold no '/', so the prefix, ending in one, matches theirs alone.
        doomed: list[ObjectIdentifierTypeDef] = []
        try:
            with translated_aws_errors("S3"):
                for page in self._client.get_paginator("list_object_versions").paginate(
                    Bucket=self._bucket, Prefix=prefix
                ):
                    for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                        if entry["Key"].startswith(prefix):
                            doomed.append({"Key": entry["Key"], "VersionId": entry["VersionId"]})
                for start in range(0, len(doomed), 1000):
                    response = self._client.delete_objects(
                        Bucket=self._bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True}
                    )
                    if response.get("Errors"):
                        raise UpstreamUnavailable("S3 did not delete every version of a document; delete it again")
        except ClientError as exc:
            raise UpstreamUnavailable(f"S3 refused deleting a document ({error_code(exc)})") from exc
        return len(doomed)
