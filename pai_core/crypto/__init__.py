"""Envelope encryption under a per-user key hierarchy. Knows nothing of boto3: KMS arrives through
the KeyService port and the wrapped branch keys through the BranchKeyStore port."""

from pai_core.crypto.context import EncryptionContext, serialize_context
from pai_core.crypto.envelope import EnvelopeCipher, RecordContext
from pai_core.crypto.keyring import (
    BranchKey,
    BranchKeyring,
    BranchKeyStore,
    KeyMaterialDestroyed,
    KeyringPolicy,
    WrappedBranchKey,
)
from pai_core.crypto.keys import DataKey, KeyService

__all__ = [
    "BranchKey",
    "BranchKeyStore",
    "BranchKeyring",
    "DataKey",
    "EncryptionContext",
    "EnvelopeCipher",
    "KeyMaterialDestroyed",
    "KeyService",
    "KeyringPolicy",
    "RecordContext",
    "WrappedBranchKey",
    "serialize_context",
]
