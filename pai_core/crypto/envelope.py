"""Envelope encryption of one value: a KMS data key, AES-256-GCM, everything needed to decrypt
(except the master key) stored beside the ciphertext in a versioned frame.

Frame, version 1 (all integers big-endian):

    version (1 byte, 0x01) | wrapped key length (2) | wrapped key | nonce (12) | ciphertext | tag (16)

The GCM associated data is the frame header (version, length, wrapped key) followed by the canonical
serialization of the record's full encryption context, so a frame only decrypts for the exact
record and attribute it was written for.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pai_core.crypto.context import serialize_context
from pai_core.crypto.keys import DATA_KEY_BYTES, KeyService
from pai_core.errors import IntegrityError

FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BH")


@dataclass(frozen=True)
class RecordContext:
    """Where a ciphertext belongs.

    `partition` (for example table and owner) is what every record served by one cached data key
    shares; it is the KMS encryption context of that key. `record` names the record and attribute.
    Both go, canonically serialized, into the AEAD's associated data.
    """

    partition: Mapping[str, str]
    record: Mapping[str, str]

    def __post_init__(self) -> None:
        overlap = set(self.partition) & set(self.record)
        if overlap:
            raise ValueError(f"context keys given twice: {sorted(overlap)}")

    def full(self) -> dict[str, str]:
        return {**self.partition, **self.record}


class EnvelopeCipher:
    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    def encrypt(self, plaintext: bytes, context: RecordContext) -> bytes:
        data_key = self._keys.generate_data_key(context.partition)
        if len(data_key.plaintext) != DATA_KEY_BYTES:
            raise ValueError("data key must be 256 bits")
        if len(data_key.wrapped) > 0xFFFF:
            raise ValueError("wrapped data key too long for the frame")
        header = _HEADER.pack(FORMAT_VERSION, len(data_key.wrapped)) + data_key.wrapped
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(data_key.plaintext).encrypt(nonce, plaintext, _aad(header, context))
        return header + nonce + sealed

    def decrypt(self, frame: bytes, context: RecordContext) -> bytes:
        header, wrapped, nonce, sealed = _split(frame)
        data_key = self._keys.decrypt_data_key(wrapped, context.partition)
        try:
            return AESGCM(data_key).decrypt(nonce, sealed, _aad(header, context))
        except InvalidTag as exc:
            raise IntegrityError("stored value failed authentication") from exc


def _aad(header: bytes, context: RecordContext) -> bytes:
    return header + serialize_context(context.full())


def _split(frame: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    if len(frame) < _HEADER.size:
        raise IntegrityError("stored value is truncated")
    version, wrapped_length = _HEADER.unpack_from(frame)
    if version != FORMAT_VERSION:
        raise IntegrityError(f"unknown ciphertext format version {version}")
    header_end = _HEADER.size + wrapped_length
    if wrapped_length == 0 or len(frame) < header_end + NONCE_BYTES + TAG_BYTES:
        raise IntegrityError("stored value is truncated")
    nonce_end = header_end + NONCE_BYTES
    return frame[:header_end], frame[_HEADER.size : header_end], frame[header_end:nonce_end], frame[nonce_end:]
