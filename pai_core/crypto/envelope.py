"""Sealing one value under its user's branch key (pai_core.crypto.keyring).

Frame, version 2 (integers big-endian):

    version (1 byte, 0x02) | branch key version (4) | salt (32) | nonce (12) | ciphertext | tag (16)

The record key is HKDF-SHA256(branch key, salt, info = label + canonical encryption context): a
fresh key for every value, bound to the exact record and attribute it was written for. The GCM
associated data is the frame header followed by the same canonical context, so moving a frame to
another record, attribute, table or user, or changing any byte of it, fails authentication.
A random 256-bit salt per value keeps record keys from ever repeating, so the random nonce never
has to carry the whole collision budget of a long-lived key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pai_core.crypto.context import serialize_context
from pai_core.crypto.keyring import BranchKeyring
from pai_core.errors import IntegrityError

FORMAT_VERSION = 2
SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
RECORD_KEY_BYTES = 32
_HEADER = struct.Struct(">BI")
HEADER_BYTES = _HEADER.size + SALT_BYTES
_RECORD_KEY_LABEL = b"pai record key v2\x00"


@dataclass(frozen=True)
class RecordContext:
    """Where a ciphertext belongs.

    `partition` names the user's slice of a store (table or bucket, and `owner`, whose branch key
    seals the value); `record` names the record and attribute. Both, canonically serialized, go
    into the record key's derivation and the AEAD's associated data.
    """

    partition: Mapping[str, str]
    record: Mapping[str, str]

    def __post_init__(self) -> None:
        overlap = set(self.partition) & set(self.record)
        if overlap:
            raise ValueError(f"context keys given twice: {sorted(overlap)}")
        if not self.partition.get("owner"):
            raise ValueError("a record context names its owner")

    @property
    def owner(self) -> str:
        return self.partition["owner"]

    def full(self) -> dict[str, str]:
        return {**self.partition, **self.record}


class EnvelopeCipher:
    def __init__(self, keyring: BranchKeyring) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> BranchKeyring:
        return self._keyring

    def encrypt(self, plaintext: bytes, context: RecordContext, *, create_key: bool = True) -> bytes:
        """`create_key=False`: raise KeyMaterialDestroyed rather than make the owner a branch key."""
        branch = self._keyring.active_key(context.owner, create=create_key)
        header = _HEADER.pack(FORMAT_VERSION, branch.version) + os.urandom(SALT_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        serialized = serialize_context(context.full())
        key = _record_key(branch.material, header[_HEADER.size :], serialized)
        return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + serialized)

    def decrypt(self, frame: bytes, context: RecordContext) -> bytes:
        if len(frame) < HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise IntegrityError("stored value is truncated")
        version, branch_version = _HEADER.unpack_from(frame)
        if version != FORMAT_VERSION:
            raise IntegrityError(f"unknown ciphertext format version {version}")
        if branch_version == 0:
            raise IntegrityError("stored value names no key version")
        branch = self._keyring.key(context.owner, branch_version)
        header, nonce, sealed = (
            frame[:HEADER_BYTES],
            frame[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES],
            frame[HEADER_BYTES + NONCE_BYTES :],
        )
        serialized = serialize_context(context.full())
        key = _record_key(branch.material, header[_HEADER.size :], serialized)
        try:
            return AESGCM(key).decrypt(nonce, sealed, header + serialized)
        except InvalidTag as exc:
            raise IntegrityError("stored value failed authentication") from exc


def _record_key(branch_key: bytes, salt: bytes, serialized_context: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=RECORD_KEY_BYTES, salt=salt, info=_RECORD_KEY_LABEL + serialized_context
    )
    return hkdf.derive(branch_key)
