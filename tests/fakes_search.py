"""In-memory stand-ins for the search index's ports: a memory store with a change log (head with
version and generation, time-ordered entries, reads by key), a fake S3 client for the snapshot
adapter, and clocks."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from pai_core.ids import MemoryIds
from pai_core.models import (
    ChangeEntry,
    ChangeOp,
    ChangeStamp,
    IndexedItem,
    ItemRef,
    Memory,
    MemoryEdit,
    MemoryVersion,
)
from tests.fakes import FixedClock, InMemoryMemoryRepository


@dataclass
class InMemoryMemoryStore(InMemoryMemoryRepository):
    """InMemoryMemoryRepository plus what DynamoMemoryRepository and DynamoChangeLog offer a search
    index: a head (version moved by every change, generation by every forget), change-log entries,
    and reads of items by key. Counts every read, so tests can tell a warm search from a reload."""

    clock: FixedClock = field(default_factory=FixedClock)
    stamps: Counter[str] = field(default_factory=Counter)
    generations: Counter[str] = field(default_factory=Counter)
    entries: dict[str, list[ChangeEntry]] = field(default_factory=dict)
    past: dict[tuple[str, str], list[MemoryVersion]] = field(default_factory=dict)
    reads: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._entry_ids = MemoryIds()

    def record(self, owner: str, changes: Sequence[tuple[ChangeOp, ItemRef]]) -> None:
        for op, ref in changes:
            self.entries.setdefault(owner, []).append(ChangeEntry(id=self._entry_ids(self.clock.now()), op=op, ref=ref))
        self.stamps[owner] += 1

    def add(self, owner: str, memory: Memory, embedding: np.ndarray) -> None:
        super().add(owner, memory, embedding)
        self.record(owner, [("put", ItemRef("memory", memory.id))])

    def add_many(self, owner: str, memories: Sequence[tuple[Memory, np.ndarray]]) -> None:
        for memory, embedding in memories:
            InMemoryMemoryRepository.add(self, owner, memory, embedding)
        self.record(owner, [("put", ItemRef("memory", memory.id)) for memory, _ in memories])

    def update(
        self,
        owner: str,
        memory_id: str,
        edit: MemoryEdit,
        *,
        embedding: np.ndarray | None,
        reason: str | None,
        at: datetime,
    ) -> Memory | None:
        updated = super().update(owner, memory_id, edit, embedding=embedding, reason=reason, at=at)
        if updated is not None:
            self.record(owner, [("update", ItemRef("memory", memory_id))])
        return updated

    def delete(self, owner: str, memory_id: str) -> bool:
        if not super().delete(owner, memory_id):
            return False
        self.record(owner, [("delete", ItemRef("memory", memory_id))])
        return True

    def delete_silently(self, owner: str, memory_id: str) -> None:
        """Removes a memory behind every index's back (no change-log entry, no stamp)."""
        self.items.pop((owner, memory_id), None)

    # -- ChangeLog --

    def change_stamp(self, owner: str) -> ChangeStamp:
        self.reads["change_stamp"] += 1
        return ChangeStamp(version=self.stamps[owner], generation=self.generations[owner])

    def changes_after(self, owner: str, after_id: str) -> Iterator[ChangeEntry]:
        self.reads["changes_after"] += 1
        found = sorted((e for e in self.entries.get(owner, []) if e.id > after_id), key=lambda e: e.id)
        self.reads["entries"] += len(found)
        return iter(found)

    # -- OwnerGenerations --

    def move_generation(self, owner: str) -> int:
        self.generations[owner] += 1
        return self.generations[owner]

    def purge(self, owner: str) -> int:
        """Like the table: the memories and entries go, the head (stamp and generation) stays."""
        self.entries.pop(owner, None)
        return super().purge(owner)

    # -- IndexSource (kind "memory") --

    def all_items(self, owner: str) -> list[IndexedItem]:
        self.reads["all_items"] += 1
        rows = sorted(self.vectors(owner), key=lambda row: row.ref)
        self.reads["item_rows"] += len(rows)
        return rows

    def items_by_id(self, owner: str, ids: Sequence[str]) -> list[IndexedItem]:
        self.reads["items_by_id"] += 1
        wanted = set(ids)
        rows = [row for row in self.vectors(owner) if row.ref.id in wanted]
        self.reads["item_rows"] += len(rows)
        return rows


class FakeS3Client:
    """get_object / put_object on a dict, with S3's error for a missing key; an unversioned bucket
    to the snapshot store's purge (one version per object)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.calls: Counter[str] = Counter()

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.calls["put_object"] += 1
        self.objects[(Bucket, Key)] = bytes(Body)
        return {}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls["get_object"] += 1
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_object_versions"
        client = self

        class Pages:
            def paginate(self, *, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                client.calls["list_object_versions"] += 1
                keys = [key for bucket, key in client.objects if bucket == Bucket and key.startswith(Prefix)]
                return [{"Versions": [{"Key": key, "VersionId": "null"} for key in keys]}]

        return Pages()

    def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        self.calls["delete_objects"] += 1
        for entry in Delete["Objects"]:
            self.objects.pop((Bucket, entry["Key"]), None)
        return {}


class ManualClock:
    """Seconds that move only when told: both the wall clock and the monotonic clock of an index."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unit_vectors(count: int, dimensions: int = 384, *, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered_vectors(count: int, dimensions: int = 384, *, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, like sentence embeddings (random ones have no neighbours)."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(clusters, dimensions, seed=seed + 1)
    rows = centres[rng.integers(0, clusters, count)] + 0.6 * unit_vectors(count, dimensions, seed=seed + 2)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
