"""Per-user branch keys: the key hierarchy under every record PAI stores.

    KMS key (one per deployment, never leaves KMS)
      └─ branch key, per user and version (32 random bytes, stored only wrapped by KMS)
           └─ record key, per stored value (HKDF-SHA256 of the branch key, a random salt and the
              value's encryption context; never stored)

This is the pattern of the AWS Encryption SDK's hierarchical keyring. What it buys:
- KMS sees one Decrypt per user per cache lifetime, however many records a container touches
  (a cold search over 10K memories: one call, not 10K).
- Forgetting a user is deleting their few branch-key items: every ciphertext of theirs, in the
  tables, the bucket, or any backup of them, is then noise (crypto-shredding). The key store table
  is deliberately not backed up (see infra/template.yaml), or a restore would bring the keys back.
- Rotation writes a new version and moves the user's `active` pointer; records name the version
  they were sealed under, so older ones stay readable and nothing is re-encrypted.
- A version number names one key for ever: the store keeps how far an owner's destroyed versions
  went (a number, no secret), and a user made again after a forget starts past it. A container
  that still caches a destroyed key can then never take it for a new one of the same number: what
  it sealed names a version that no longer exists (KeyMaterialDestroyed for every reader), and what
  others seal under the new key names a version it has never seen, so it fetches that key.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from pai_core.crypto.context import EncryptionContext
from pai_core.crypto.keys import DATA_KEY_BYTES, KeyService
from pai_core.errors import IntegrityError

BRANCH_KEY_PURPOSE = "pai-branch-key"


@dataclass(frozen=True, repr=False)
class BranchKey:
    owner: str
    version: int
    material: bytes

    def __repr__(self) -> str:  # never let the key itself reach a log line
        return f"BranchKey(owner={self.owner!r}, version={self.version})"


@dataclass(frozen=True)
class WrappedBranchKey:
    owner: str
    version: int
    wrapped: bytes


class BranchKeyStore(Protocol):
    """Where wrapped branch keys live (a DynamoDB table in AWS)."""

    def active(self, owner: str) -> WrappedBranchKey | None:
        """The version new records are sealed under, or None for a user with no key yet."""
        ...

    def get(self, owner: str, version: int) -> WrappedBranchKey | None: ...

    def first_version(self, owner: str) -> int:
        """The version an owner's first key takes: 1, or one past every version of theirs ever
        destroyed. `activate` refuses a first key at or below a destroyed version."""
        ...

    def activate(self, key: WrappedBranchKey, *, replacing: int | None) -> bool:
        """Store `key` and make it the active one, provided the active version is still
        `replacing` (None: the user has no key yet). False when another writer got there first."""
        ...

    def destroy(self, owner: str) -> int:
        """Delete every version of the owner's key material, first recording the highest version
        destroyed (see `first_version`); how many key items went."""
        ...


class KeyMaterialDestroyed(IntegrityError):
    """A record's branch key no longer exists: its user was forgotten."""

    code = "key_destroyed"


@dataclass(frozen=True)
class KeyringPolicy:
    """How long an unwrapped branch key may serve from memory, and how many users' keys one
    container keeps. The age bounds both exposure and how soon a rotation reaches every container."""

    max_age_seconds: float = 300.0
    max_entries: int = 1024

    def __post_init__(self) -> None:
        if not self.max_age_seconds > 0:
            raise ValueError("max_age_seconds must be positive")
        if self.max_entries < 1:
            raise ValueError("max_entries must be at least 1")


class _ExpiringLru:
    """LRU with an age limit; every method holds the lock, so it is safe across gateway threads."""

    def __init__(self, policy: KeyringPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, BranchKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> BranchKey | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self._policy.max_age_seconds:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, value: BranchKey) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._policy.max_entries:
                self._entries.popitem(last=False)

    def drop_owner(self, owner: str) -> None:
        with self._lock:
            for key in [k for k, (_, v) in self._entries.items() if v.owner == owner]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class BranchKeyring:
    def __init__(
        self,
        store: BranchKeyStore,
        kms: KeyService,
        *,
        keystore_name: str,
        policy: KeyringPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`keystore_name` goes into every branch key's KMS encryption context, so a wrapped key
        copied into another deployment's store does not unwrap there."""
        self._store = store
        self._kms = kms
        self._keystore_name = keystore_name
        self.policy = policy or KeyringPolicy()
        self._active = _ExpiringLru(self.policy, clock)
        self._versions = _ExpiringLru(self.policy, clock)
        # Misses are rare (one per user per max_age) and a Lambda environment serves one request
        # at a time: one lock for all of them keeps concurrent first requests of a user (local
        # gateway threads) from unwrapping or making its key twice.
        self._miss_lock = threading.Lock()

    def active_key(self, owner: str, *, create: bool = True) -> BranchKey:
        """The key new records of `owner` are sealed under; made on the user's first write. With
        `create=False` (what re-seals data already sealed, such as an index snapshot) a user without
        a key gets none made: after a forget, nothing derived from the old data may get a new key."""
        cached = self._active.get(owner)
        if cached is not None:
            return cached
        with self._miss_lock:
            cached = self._active.get(owner)
            if cached is not None:
                return cached
            stored = self._store.active(owner)
            if stored is None and not create:
                raise KeyMaterialDestroyed("the user has no key material to seal this under")
            key = self._unwrap(stored) if stored is not None else self._create(owner, replacing=None)
            self._remember(key, active=True)
            return key

    def key(self, owner: str, version: int) -> BranchKey:
        """The key of one version, to open a record sealed under it."""
        cached = self._versions.get((owner, version))
        if cached is not None:
            return cached
        with self._miss_lock:
            cached = self._versions.get((owner, version))
            if cached is not None:
                return cached
            stored = self._store.get(owner, version)
            if stored is None:
                raise KeyMaterialDestroyed("this record's key material no longer exists")
            key = self._unwrap(stored)
            self._remember(key, active=False)
            return key

    def rotate(self, owner: str) -> int:
        """Make a new version the active one; returns it. Records sealed under older versions
        stay readable. Other containers switch within `policy.max_age_seconds`."""
        with self._miss_lock:
            current = self._store.active(owner)
            key = self._create(owner, replacing=None if current is None else current.version)
            self._remember(key, active=True)
            return key.version

    def destroy(self, owner: str) -> int:
        """Crypto-shred: delete every version of the owner's key material, here and in the store."""
        with self._miss_lock:
            self._active.drop_owner(owner)
            self._versions.drop_owner(owner)
            return self._store.destroy(owner)

    def drop_cached(self, owner: str) -> None:
        """Forget this container's unwrapped keys of `owner` (another container forgot the user)."""
        with self._miss_lock:
            self._active.drop_owner(owner)
            self._versions.drop_owner(owner)

    def drop_all_cached(self) -> None:
        """Forget every unwrapped key this container holds (before a SnapStart snapshot)."""
        with self._miss_lock:
            self._active.clear()
            self._versions.clear()

    def cached_keys(self) -> int:
        return len(self._versions)

    def _create(self, owner: str, *, replacing: int | None) -> BranchKey:
        version = self._store.first_version(owner) if replacing is None else replacing + 1
        data_key = self._kms.generate_data_key(self._kms_context(owner, version))
        if len(data_key.plaintext) != DATA_KEY_BYTES:
            raise ValueError("branch keys must be 256 bits")
        if self._store.activate(WrappedBranchKey(owner, version, data_key.wrapped), replacing=replacing):
            return BranchKey(owner, version, data_key.plaintext)
        # Another container made or rotated this user's key at the same moment: use theirs.
        winner = self._store.active(owner)
        if winner is None:
            raise KeyMaterialDestroyed("the user's key material was destroyed while it was being made")
        return self._unwrap(winner)

    def _unwrap(self, stored: WrappedBranchKey) -> BranchKey:
        material = self._kms.decrypt_data_key(stored.wrapped, self._kms_context(stored.owner, stored.version))
        return BranchKey(stored.owner, stored.version, material)

    def _remember(self, key: BranchKey, *, active: bool) -> None:
        self._versions.put((key.owner, key.version), key)
        if active:
            self._active.put(key.owner, key)

    def _kms_context(self, owner: str, version: int) -> EncryptionContext:
        return {
            "purpose": BRANCH_KEY_PURPOSE,
            "keystore": self._keystore_name,
            "owner": owner,
            "version": str(version),
        }
