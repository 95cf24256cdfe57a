"""KMS as the KeyService of envelope encryption. Every call is counted (the KmsCalls metric, by
operation and outcome): KMS bills per request, and the key cache is what keeps the count low."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pai_core.adapters.aws_errors import error_code, translated_aws_errors
from pai_core.crypto import DataKey, EncryptionContext
from pai_core.errors import IntegrityError
from pai_core.ports import NO_METRICS, Metrics

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient


class KmsKeyService:
    def __init__(self, client: KMSClient, key_id: str, *, metrics: Metrics = NO_METRICS) -> None:
        self._client = client
        self._key_id = key_id
        self._metrics = metrics

    def generate_data_key(self, context: EncryptionContext) -> DataKey:
        outcome = "error"
        try:
            with translated_aws_errors("KMS"):
                response = self._client.generate_data_key(
                    KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=dict(context)
                )
            outcome = "ok"
        finally:
            self._metrics.count("KmsCalls", operation="GenerateDataKey", outcome=outcome)
        return DataKey(plaintext=response["Plaintext"], wrapped=response["CiphertextBlob"])

    def decrypt_data_key(self, wrapped: bytes, context: EncryptionContext) -> bytes:
        outcome = "error"
        try:
            with translated_aws_errors("KMS"):
                response = self._client.decrypt(
                    CiphertextBlob=wrapped, EncryptionContext=dict(context), KeyId=self._key_id
                )
            outcome = "ok"
        except ClientError as exc:
            if error_code(exc) in {"InvalidCiphertextException", "IncorrectKeyException"}:
                outcome = "refused"
                raise IntegrityError("data key does not unwrap under this context") from exc
            raise
        finally:
            self._metrics.count("KmsCalls", operation="Decrypt", outcome=outcome)
        return response["Plaintext"]
