"""Envelope encryption. Knows nothing of boto3: KMS arrives through the KeyService port."""

from pai_core.crypto.context import EncryptionContext, serialize_context
from pai_core.crypto.envelope import EnvelopeCipher, RecordContext
from pai_core.crypto.keys import CachePolicy, CachingKeyService, DataKey, KeyService

__all__ = [
    "CachePolicy",
    "CachingKeyService",
    "DataKey",
    "EncryptionContext",
    "EnvelopeCipher",
    "KeyService",
    "RecordContext",
    "serialize_context",
]
