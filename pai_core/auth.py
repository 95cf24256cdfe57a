"""API keys: who a request acts for.

A key reads `pai_<keyId>_<secret>`. The key id is public and short (16 hex digits): it is the
partition key of the keys table, so checking a key is one GetItem. The secret is 256 random bits
from `secrets`. Only a SHA-256 digest of the whole key is stored. A slow password hash (bcrypt,
scrypt, Argon2) exists to make guessing low-entropy passwords expensive; a 256-bit random secret
cannot be guessed however fast each guess is, so one SHA-256 is enough, and it keeps the check
cheap on every uncached request.

A revoked key keeps its record (with `revokedAt`), so listings still show it. Unknown and revoked
keys are refused with the same message: a caller learns nothing about which keys exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pai_core.errors import Conflict, InvalidInput, NotFound, PaiError, Unauthenticated, UpstreamUnavailable

if TYPE_CHECKING:
    from pai_core.ports import ApiKeyStore, Clock

KEY_PREFIX = "pai"
_KEY_ID_BYTES = 8
_SECRET_BYTES = 32
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
# The secret is URL-safe base64 (43 characters for 32 bytes), which may itself contain '_': the key
# id never does, so the first two underscores are the separators.
_API_KEY = re.compile(r"^pai_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
# Config's owner pattern: user ids become owners, which are part of storage keys ('#' never is).
USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
MAX_LABEL_CHARS = 128
_ISSUE_ATTEMPTS = 3
# Compared against when there is no record, so an unknown key id costs the same work as a known one.
_NO_DIGEST = bytes(hashlib.sha256().digest_size)
# Longer than any well-formed header ("Bearer " and a 64-character key, with room for whitespace):
# anything longer is malformed before it is even parsed, and never reaches the table.
MAX_AUTHORIZATION_CHARS = 256


class AuthFailure(StrEnum):
    """Why a request carries no usable key. These travel from the authorizer to the function in the
    request context (`authError`), so they are plain strings."""

    MISSING = "missing"
    MALFORMED = "malformed"
    INVALID = "invalid"  # unknown or revoked: one reason, so a caller cannot tell them apart
    UNAVAILABLE = "unavailable"  # the key store could not be read: not the caller's fault


_MESSAGES = {
    AuthFailure.MISSING: "an API key is required: send 'Authorization: Bearer <api key>'",
    AuthFailure.MALFORMED: "the Authorization header must be 'Bearer <api key>' with a PAI API key",
    AuthFailure.INVALID: "the API key is not valid",
}


class ApiKeyRejected(Unauthenticated):
    def __init__(self, reason: AuthFailure) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason = reason


def auth_failure_error(reason: str) -> PaiError:
    """The error an authorizer's `authError` stands for. Anything unrecognized is an invalid key:
    whatever went wrong, the request is not authenticated."""
    if reason == AuthFailure.UNAVAILABLE:
        return UpstreamUnavailable("API keys cannot be checked right now")
    known = {failure.value: failure for failure in _MESSAGES}
    return ApiKeyRejected(known.get(reason, AuthFailure.INVALID))


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and USER_ID.match(value) is not None


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key, never its digest."""

    key_id: str
    user_id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class StoredApiKey:
    info: ApiKeyInfo
    digest: bytes = field(repr=False)


@dataclass(frozen=True)
class IssuedApiKey:
    """A new key: `key` is shown to its user once and stored nowhere."""

    key: str = field(repr=False)
    info: ApiKeyInfo


@dataclass(frozen=True)
class Principal:
    user_id: str
    key_id: str


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def parse_bearer(authorization: str | None) -> tuple[str, str]:
    """The key and its key id from an Authorization header value: its shape only (scheme, prefix,
    16 hex digits, a 43-character secret), no I/O, so a malformed value costs no table read."""
    if authorization is None or not authorization.strip():
        raise ApiKeyRejected(AuthFailure.MISSING)
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        raise ApiKeyRejected(AuthFailure.MALFORMED)
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110)
        raise ApiKeyRejected(AuthFailure.MALFORMED)
    return parse_key(credentials.strip())


def parse_key(key: str) -> tuple[str, str]:
    match = _API_KEY.match(key)
    if match is None:
        raise ApiKeyRejected(AuthFailure.MALFORMED)
    return key, match.group(1)


class KnownKeys:
    """The keys this container checked recently and found good: at most `max_entries`, each for at
    most `max_age_seconds`. Keyed by the key's SHA-256, so no key stays in memory. Only good answers
    are kept: an unknown or revoked key, and a key store that could not be read, are asked again
    next time (so an outage is never remembered past itself)."""

    def __init__(
        self, *, max_age_seconds: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_age_seconds <= 0 or max_entries <= 0:
            raise ValueError("a key cache needs a positive age and size; use no cache instead")
        self._max_age = max_age_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[1]

    def put(self, digest: bytes, principal: Principal) -> None:
        with self._lock:
            self._entries[digest] = (self._clock() + self._max_age, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ApiKeys:
    """Issue, list, revoke and check API keys."""

    def __init__(self, store: ApiKeyStore, clock: Clock, *, known: KnownKeys | None = None) -> None:
        self._store = store
        self._clock = clock
        self._known = known

    def issue(self, user_id: str, label: str = "") -> IssuedApiKey:
        _check_user_id(user_id)
        _check_label(label)
        for _ in range(_ISSUE_ATTEMPTS):
            key_id = secrets.token_hex(_KEY_ID_BYTES)
            key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
            info = ApiKeyInfo(key_id=key_id, user_id=user_id, label=label, created_at=self._clock.now())
            try:
                self._store.add(StoredApiKey(info, key_digest(key)))
            except Conflict:
                continue  # two 64-bit key ids met: draw again
            return IssuedApiKey(key=key, info=info)
        raise Conflict("could not find a free key id")

    def register(self, key: str, user_id: str, label: str = "") -> ApiKeyInfo:
        """Store a key made earlier, for a store that forgets (the local emulator's lives as long as
        its process). Idempotent: the same key for the same user is found again, revoked or not; a
        key id already used by another key or user is a Conflict."""
        _check_user_id(user_id)
        _check_label(label)
        try:
            key, key_id = parse_key(key)
        except ApiKeyRejected:
            raise InvalidInput("not a PAI API key", field="key") from None
        digest = key_digest(key)
        info = ApiKeyInfo(key_id=key_id, user_id=user_id, label=label, created_at=self._clock.now())
        try:
            self._store.add(StoredApiKey(info, digest))
        except Conflict:
            existing = self._store.get(key_id)
            if existing is None or not hmac.compare_digest(existing.digest, digest) or existing.info.user_id != user_id:
                raise Conflict("this key id belongs to another key") from None
            return existing.info
        return info

    def list_keys(self, user_id: str | None = None) -> list[ApiKeyInfo]:
        """One user's keys (an index query), or every key (a scan of the table: an admin's tool,
        never a request path); oldest first."""
        if user_id is not None:
            _check_user_id(user_id)
            keys = list(self._store.for_user(user_id))
        else:
            keys = list(self._store.every_key())
        return sorted(keys, key=lambda info: (info.created_at, info.key_id))

    def revoke(self, key_id: str) -> ApiKeyInfo:
        """Marks the key revoked (the record stays); revoking twice keeps the first time."""
        if not _KEY_ID.match(key_id):
            raise InvalidInput("a key id is 16 hexadecimal digits", field="keyId")
        revoked = self._store.revoke(key_id, at=self._clock.now())
        if revoked is None:
            raise NotFound("no such API key")
        return revoked

    def revoke_all(self, user_id: str) -> int:
        """Revokes every live key of the user; how many there were. The per-user index is
        eventually consistent: a key issued a moment ago may be missed, so run it again after
        issuing nothing more."""
        live = [info for info in self.list_keys(user_id) if not info.revoked]
        at = self._clock.now()
        return sum(1 for info in live if self._store.revoke(info.key_id, at=at) is not None)

    def identify(self, authorization: str | None) -> Principal:
        """The user an `Authorization` header value speaks for, or ApiKeyRejected. A malformed value
        is refused before the store is asked; a key checked good within the cache's age is not
        asked about again."""
        key, key_id = parse_bearer(authorization)
        digest = key_digest(key)
        if self._known is not None and (known := self._known.get(digest)) is not None:
            return known
        stored = self._store.get(key_id)
        matches = hmac.compare_digest(digest, stored.digest if stored is not None else _NO_DIGEST)
        if stored is None or not matches or stored.info.revoked or not is_user_id(stored.info.user_id):
            raise ApiKeyRejected(AuthFailure.INVALID)
        principal = Principal(user_id=stored.info.user_id, key_id=key_id)
        if self._known is not None:
            self._known.put(digest, principal)
        return principal

    def forget_checked(self) -> None:
        """Drop every remembered good answer, as if their age had passed (tests of revocation)."""
        if self._known is not None:
            self._known.clear()


def _check_user_id(user_id: str) -> None:
    if not is_user_id(user_id):
        raise InvalidInput(f"a user id must match {USER_ID.pattern}", field="userId")


def _check_label(label: str) -> None:
    if len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise InvalidInput(f"a label is at most {MAX_LABEL_CHARS} printable characters", field="label")
