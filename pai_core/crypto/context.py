"""Canonical encryption context.

The same mapping is sent to KMS and fed to AES-GCM as associated data, so it must serialize to the
same bytes whatever order its keys were given in. Each key and value is length-prefixed, which keeps
the encoding unambiguous for any string (no separator can be smuggled inside a value).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

EncryptionContext = Mapping[str, str]


def serialize_context(context: EncryptionContext) -> bytes:
    parts = [struct.pack(">H", len(context))]
    for key, value in sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items()):
        parts.append(struct.pack(">H", len(key)) + key)
        parts.append(struct.pack(">I", len(value)) + value)
    return b"".join(parts)
