"""A keyed fingerprint of a user's file, to recognize the same bytes uploaded twice.

Not a plain SHA-256: whoever can read the table could then confirm a guess of a file's contents by
hashing the guess. An HMAC-SHA256 under a key derived (HKDF) from the user's first branch key
version: only someone holding the user's key material can compute it, it stays the same across key
rotations (version 1 is kept), and once the user is forgotten no fingerprint of theirs can be
recomputed by anyone.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pai_core.crypto.keyring import BranchKeyring

_LABEL = b"pai document fingerprint v1\x00"
_FIRST_VERSION = 1


def content_fingerprint(keyring: BranchKeyring, owner: str, content: bytes) -> str:
    keyring.active_key(owner)  # made on the user's first write, like any other sealed value
    material = keyring.key(owner, _FIRST_VERSION).material
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL + owner.encode("utf-8")).derive(material)
    return hmac.new(key, content, hashlib.sha256).hexdigest()
