"""Data keys, the port to the service that wraps them, and bounded caches of both directions."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from pai_core.crypto.context import EncryptionContext, cache_partition

DATA_KEY_BYTES = 32
# AES-GCM with random 96-bit nonces stays within NIST's collision bound up to 2**32 messages per key.
MAX_MESSAGES_PER_DATA_KEY = 2**32


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


@dataclass(frozen=True)
class CachePolicy:
    """Limits on how long and how often one data key may serve, as the AWS Encryption SDK's caching
    materials manager sets them. Checked once, when the policy is made."""

    max_age_seconds: float = 300.0
    max_uses: int = 1000
    max_entries: int = 256

    def __post_init__(self) -> None:
        if not self.max_age_seconds > 0:
            raise ValueError("max_age_seconds must be positive")
        if not 1 <= self.max_uses <= MAX_MESSAGES_PER_DATA_KEY:
            raise ValueError(f"max_uses must be in 1..{MAX_MESSAGES_PER_DATA_KEY}")
        if self.max_entries < 1:
            raise ValueError("max_entries must be at least 1")


@dataclass
class _Entry:
    value: DataKey | bytes
    created: float
    uses: int = 0


class _BoundedCache:
    """LRU with an age limit; every method holds the lock, so it is safe across gateway threads."""

    def __init__(self, policy: CachePolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable, *, count_use: bool) -> DataKey | bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expired = self._clock() - entry.created >= self._policy.max_age_seconds
            used_up = count_use and entry.uses >= self._policy.max_uses
            if expired or used_up:
                del self._entries[key]
                return None
            if count_use:
                entry.uses += 1
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: Hashable, value: DataKey | bytes, *, uses: int) -> None:
        with self._lock:
            self._entries[key] = _Entry(value=value, created=self._clock(), uses=uses)
            self._entries.move_to_end(key)
            while len(self._entries) > self._policy.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class CachingKeyService:
    """Wraps a KeyService so steady-state traffic does not call KMS once per item.

    Encryption reuses a data key per partition context (the KMS encryption context) until it is
    too old or has protected `max_uses` values; decryption remembers unwrapped keys by their
    wrapped bytes and context. Both are bounded in size and age.
    """

    def __init__(
        self,
        inner: KeyService,
        policy: CachePolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self.policy = policy or CachePolicy()
        self._for_encrypt = _BoundedCache(self.policy, clock)
        self._for_decrypt = _BoundedCache(self.policy, clock)

    def generate_data_key(self, context: EncryptionContext) -> DataKey:
        partition = cache_partition(context)
        cached = self._for_encrypt.take(partition, count_use=True)
        if isinstance(cached, DataKey):
            return cached
        key = self._inner.generate_data_key(context)
        self._for_encrypt.put(partition, key, uses=1)
        self._for_decrypt.put((key.wrapped, partition), key.plaintext, uses=0)
        return key

    def decrypt_data_key(self, wrapped: bytes, context: EncryptionContext) -> bytes:
        cache_key = (wrapped, cache_partition(context))
        cached = self._for_decrypt.take(cache_key, count_use=False)
        if isinstance(cached, bytes):
            return cached
        plaintext = self._inner.decrypt_data_key(wrapped, context)
        self._for_decrypt.put(cache_key, plaintext, uses=0)
        return plaintext
