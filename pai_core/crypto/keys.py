"""Data keys and the port to the service that makes and unwraps them (KMS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pai_core.crypto.context import EncryptionContext

DATA_KEY_BYTES = 32


@dataclass(frozen=True, repr=False)
class DataKey:
    plaintext: bytes
    wrapped: bytes

    def __repr__(self) -> str:  # never let the key itself reach a log line
        return f"DataKey(wrapped={len(self.wrapped)} bytes)"


class KeyService(Protocol):
    """Makes and unwraps data keys under a master key, bound to an encryption context (KMS)."""

    def generate_data_key(self, context: EncryptionContext) -> DataKey: ...

    def decrypt_data_key(self, wrapped: bytes, context: EncryptionContext) -> bytes: ...
