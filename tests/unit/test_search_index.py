"""The search index: exact and approximate ranking, category and minScore, incremental changes,
snapshots (codec, encryption, cold loads) and keeping a warm index current from the change feed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pai_core.adapters.dynamodb_changelog import DynamoChangeLog
from pai_core.adapters.dynamodb_memories import DynamoMemoryRepository
from pai_core.adapters.s3 import S3SnapshotStore
from pai_core.crypto import KeyMaterialDestroyed
from pai_core.errors import IntegrityError
from pai_core.ids import lowest_id_at
from pai_core.models import IndexedItem, ItemRef, Memory, RankedItem
from pai_core.search import AnnSettings, DesignScanSearch, IndexPolicy, LiveMemoryIndex, VectorIndex, top_k
from pai_core.search.snapshot import SnapshotError, decode, encode
from pai_core.services import MemoryService
from tests.fakes import FixedClock, HashingEmbedder, fake_cipher
from tests.fakes_search import FakeS3Client, InMemoryMemoryStore, ManualClock, clustered_vectors, unit_vectors

DIMS = 384
SMALL_ANN = AnnSettings(threshold=300, expansion_search=256)


def rows_of(matrix: np.ndarray, *, categories: tuple[str, ...] = ("general",), prefix: str = "") -> list[IndexedItem]:
    return [
        IndexedItem(
            ref=ItemRef("memory", f"{prefix}{i:08d}"),
            category=categories[i % len(categories)],
            vector=row.astype("<f4").tobytes(),
            text=f"text of row {i}",
        )
        for i, row in enumerate(matrix)
    ]


def brute_force(rows: list[IndexedItem], query: np.ndarray, k: int, **filters: object) -> list[RankedItem]:
    keep = [r for r in rows if filters.get("category") in (None, r.category)]
    if not keep:
        return []
    matrix = np.vstack([np.frombuffer(r.vector, dtype="<f4") for r in keep])
    ranked = top_k(matrix, query, k, min_score=filters.get("min_score"))  # type: ignore[arg-type]
    return [RankedItem(ref=keep[i].ref, score=score) for i, score in ranked]


def ids(results: list[RankedItem]) -> list[str]:
    return [hit.ref.id for hit in results]


def same(got: list[RankedItem], expected: list[RankedItem]) -> bool:
    return ids(got) == ids(expected) and np.allclose([h.score for h in got], [h.score for h in expected], atol=1e-6)


# -- VectorIndex: exact ------------------------------------------------------------------------------


def test_exact_index_matches_brute_force_with_category_and_min_score() -> None:
    rows = rows_of(unit_vectors(500), categories=("pets", "work", "health"))
    index = VectorIndex(DIMS)
    assert index.add(rows) == 500
    for query in unit_vectors(5, seed=9):
        assert same(index.search(query, 10), brute_force(rows, query, 10))
        assert same(index.search(query, 7, category="work"), brute_force(rows, query, 7, category="work"))
        floor = brute_force(rows, query, 3)[-1].score
        assert ids(index.search(query, 10, min_score=floor)) == ids(brute_force(rows, query, 3))
    assert index.search(unit_vectors(1)[0], 5, category="nope") == []
    assert not index.approximate


def test_adds_are_deduplicated_and_removes_are_immediate() -> None:
    rows = rows_of(unit_vectors(50))
    index = VectorIndex(DIMS)
    index.add(rows)
    assert index.add(rows[:10]) == 0  # the same ids again: nothing new
    query = np.frombuffer(rows[3].vector, dtype="<f4")
    assert ids(index.search(query, 1)) == [rows[3].ref.id]
    assert index.remove([rows[3].ref, ItemRef("memory", "never-there")]) == 1
    assert rows[3].ref.id not in ids(index.search(query, 50))
    assert len(index) == 49
    assert index.add([IndexedItem(ref=ItemRef("memory", "bad"), category="x", vector=b"\x00" * 12, text="")]) == 0


def test_many_removes_compact_without_changing_answers() -> None:
    rows = rows_of(unit_vectors(3000), categories=("a", "b"))
    index = VectorIndex(DIMS)
    index.add(rows)
    gone = {r.ref for r in rows[:2000]}
    index.remove(gone)
    left = rows[2000:]
    assert index.dead_rows < 2000  # compacted along the way
    for query in unit_vectors(3, seed=4):
        assert same(index.search(query, 5, category="b"), brute_force(left, query, 5, category="b"))


def test_fewer_rows_than_asked_for_and_empty_index() -> None:
    index = VectorIndex(DIMS)
    assert index.search(unit_vectors(1)[0], 5) == []
    rows = rows_of(unit_vectors(3))
    index.add(rows)
    index.remove([rows[0].ref])
    assert sorted(ids(index.search(unit_vectors(1)[0], 5))) == [rows[1].ref.id, rows[2].ref.id]


# -- VectorIndex: approximate ------------------------------------------------------------------------


def recall_at_10(index: VectorIndex, queries: np.ndarray, **filters: object) -> float:
    hits = 0
    for query in queries:
        exact = set(ids(index.search_exact(query, 10, **filters)))  # type: ignore[arg-type]
        hits += len(exact & set(ids(index.search(query, 10, **filters))))  # type: ignore[arg-type]
    return hits / (10 * len(queries))


def test_approximate_index_above_the_threshold_keeps_recall() -> None:
    matrix = clustered_vectors(2000)
    rows = rows_of(matrix, categories=("a", "b", "c", "d"))
    index = VectorIndex(DIMS, ann=SMALL_ANN)
    index.add(rows[:200])
    assert not index.approximate
    index.add(rows[200:])
    assert index.approximate
    queries = clustered_vectors(40, seed=7)
    assert recall_at_10(index, queries) >= 0.98
    assert recall_at_10(index, queries, category="c") >= 0.98
    # Scores are always the exact cosines of the float32 rows.
    for hit in index.search(queries[0], 5):
        row = np.frombuffer(rows[int(hit.ref.id)].vector, dtype="<f4")
        assert hit.score == pytest.approx(float(row @ queries[0]), abs=1e-6)


def test_approximate_index_honours_deletes_category_and_min_score() -> None:
    rows = rows_of(clustered_vectors(1500), categories=("a", "b", "c"))
    index = VectorIndex(DIMS, ann=SMALL_ANN)
    index.add(rows)
    query = np.frombuffer(rows[42].vector, dtype="<f4")
    assert ids(index.search(query, 1)) == [rows[42].ref.id]
    index.remove([rows[42].ref])
    assert rows[42].ref.id not in ids(index.search(query, 20))
    assert all(int(i) % 3 == 1 for i in ids(index.search(query, 20, category="b")))
    assert all(hit.score >= 0.5 for hit in index.search(query, 50, min_score=0.5))


def test_a_rare_category_is_searched_exactly_under_an_approximate_index() -> None:
    rows = rows_of(clustered_vectors(1000))
    rare = rows_of(clustered_vectors(5, seed=3), categories=("rare",), prefix="r")
    index = VectorIndex(DIMS, ann=SMALL_ANN)
    index.add(rows + rare)
    query = clustered_vectors(1, seed=11)[0]
    assert ids(index.search(query, 10, category="rare")) == ids(brute_force(rare, query, 10))


def test_the_approximate_index_is_dropped_when_the_index_shrinks() -> None:
    rows = rows_of(clustered_vectors(400))
    index = VectorIndex(DIMS, ann=SMALL_ANN)
    index.add(rows)
    assert index.approximate
    index.remove(r.ref for r in rows[:300])
    assert not index.approximate
    query = clustered_vectors(1, seed=5)[0]
    assert same(index.search(query, 5), brute_force(rows[300:], query, 5))


# -- snapshots ---------------------------------------------------------------------------------------


def snapshot_of(index: VectorIndex) -> bytes:
    return encode(index.snapshot(position="p1", stamp=7, taken_at=123.5, generation=2))


@pytest.mark.parametrize("ann", [None, SMALL_ANN])
def test_snapshot_round_trip_gives_the_same_answers(ann: AnnSettings | None) -> None:
    rows = rows_of(clustered_vectors(800), categories=("x", "y"))
    index = VectorIndex(DIMS, ann=ann)
    index.add(rows)
    index.remove([rows[1].ref, rows[2].ref])
    snapshot = decode(snapshot_of(index))
    assert (snapshot.position, snapshot.stamp, snapshot.taken_at, snapshot.generation) == ("p1", 7, 123.5, 2)
    assert (snapshot.ann is not None) == (ann is not None)
    restored = VectorIndex.from_snapshot(snapshot, ann=ann)
    assert restored.refs() == index.refs() and restored.approximate == index.approximate
    exact = {r.ref.id: np.frombuffer(r.vector, dtype="<f4") for r in rows}
    overlap = 0
    for query in clustered_vectors(10, seed=8):
        before, after = index.search(query, 10, category="y"), restored.search(query, 10, category="y")
        overlap += len(set(ids(after)) & set(ids(before)))
        # float16 in the snapshot: scores move by far less than the model's own noise (~2e-3), so
        # only near-ties can swap places.
        assert np.allclose([h.score for h in after], [h.score for h in before], atol=1e-3)
        assert all(abs(h.score - float(exact[h.ref.id] @ query)) < 1e-3 for h in after)
    assert overlap >= 98


def test_malformed_snapshots_are_refused() -> None:
    index = VectorIndex(DIMS)
    index.add(rows_of(unit_vectors(20)))
    payload = snapshot_of(index)
    for broken in (b"", b"not a snapshot", payload[:-1], payload + b"x", payload[:40]):
        with pytest.raises(SnapshotError):
            decode(broken)


def test_snapshot_store_encrypts_and_binds_to_owner() -> None:
    s3 = FakeS3Client()
    cipher = fake_cipher()
    store = S3SnapshotStore(s3, "bucket", cipher)  # type: ignore[arg-type]
    assert store.load("alice") is None
    with pytest.raises(KeyMaterialDestroyed):
        store.save("alice", b"vectors of alice")  # a snapshot never makes its owner a key
    assert s3.objects == {}
    cipher.keyring.active_key("alice")  # her first memory made it
    store.save("alice", b"vectors of alice")
    assert b"vectors of alice" not in s3.objects[("bucket", "index/alice.snapshot")]
    assert store.load("alice") == b"vectors of alice"
    s3.objects[("bucket", "index/bob.snapshot")] = s3.objects[("bucket", "index/alice.snapshot")]
    with pytest.raises(IntegrityError):
        store.load("bob")  # copied to another owner: does not decrypt


# -- LiveMemoryIndex: a container's index kept current -----------------------------------------------


class Box:
    """One container: its own index (and memory service) over the shared store and snapshot bucket."""

    def __init__(self, store: InMemoryMemoryStore, s3: FakeS3Client | None, clock: ManualClock, **policy: object):
        snapshots = None
        if s3 is not None:
            snapshots = S3SnapshotStore(s3, "bucket", shared_cipher)  # type: ignore[arg-type]
        defaults: dict[str, object] = {"snapshot_min_vectors": 10, "snapshot_rebuild_changes": 5}
        self.index = LiveMemoryIndex(
            store,
            {"memory": store},
            snapshots,
            dimensions=DIMS,
            policy=IndexPolicy(**{**defaults, **policy}),  # type: ignore[arg-type]
            wall_clock=clock,
            monotonic=clock,
        )
        self.embedder = HashingEmbedder()
        self.memories = MemoryService(store, self.embedder, store.clock, index=self.index)

    def remember(self, text: str, category: str = "general") -> str:
        return self.memories.remember("alice", content=text, category=category, metadata={}).id

    def find(self, text: str, top: int = 3, **filters: object) -> list[str]:
        return [hit.memory.id for hit in self.memories.search("alice", text, top=top, **filters)]  # type: ignore[arg-type]


shared_cipher = fake_cipher()  # one "KMS" and key store for every container of a test module
shared_cipher.keyring.active_key("alice")  # as her first stored memory would have made it


@pytest.fixture
def world() -> tuple[InMemoryMemoryStore, FakeS3Client, ManualClock]:
    return InMemoryMemoryStore(clock=FixedClock()), FakeS3Client(), ManualClock()


def test_a_warm_search_with_nothing_changed_reads_only_the_stamp(world) -> None:  # type: ignore[no-untyped-def]
    store, s3, clock = world
    box = Box(store, s3, clock)
    miso = box.remember("my cat miso likes tuna")
    assert box.find("cat miso") == [miso]
    store.reads.clear()
    for _ in range(5):
        assert box.find("cat miso") == [miso]
    assert store.reads == {"change_stamp": 5}


def test_another_containers_stores_and_deletes_are_seen_at_once(world) -> None:  # type: ignore[no-untyped-def]
    store, s3, clock = world
    reader, writer = Box(store, s3, clock), Box(store, s3, clock)
    store.clock.advance(seconds=1)
    first = writer.remember("the dentist is on tuesday")
    assert reader.find("dentist tuesday") == [first]
    store.clock.advance(seconds=1)
    second = writer.remember("the dentist moved to friday")
    assert set(reader.find("dentist", top=5)) == {first, second}
    writer.memories.forget("alice", first)
    assert reader.find("dentist", top=5) == [second]
    assert store.reads["all_items"] == 1  # one cold load; the rest came from the change log


def test_own_stores_and_deletes_reach_the_index_without_reading(world) -> None:  # type: ignore[no-untyped-def]
    store, _, clock = world
    box = Box(store, None, clock)
    box.find("warm up")
    store.reads.clear()
    memory_id = box.remember("umbrella in the hallway")
    index = box.index.index_of("alice")
    assert index is not None and ItemRef("memory", memory_id) in index
    box.memories.forget("alice", memory_id)
    assert ItemRef("memory", memory_id) not in index
    assert store.reads == {}


def test_a_memory_deleted_behind_the_index_is_never_a_hit(world) -> None:  # type: ignore[no-untyped-def]
    store, _, clock = world
    box = Box(store, None, clock)
    gone = box.remember("secret garden gate code")
    store.delete_silently("alice", gone)
    assert box.find("garden gate code") == []  # ranked, but the BatchGetItem no longer finds it


def test_late_writes_inside_the_margin_are_found_once(world) -> None:  # type: ignore[no-untyped-def]
    store, _, clock = world
    reader, writer = Box(store, None, clock), Box(store, None, clock)
    store.clock.advance(seconds=10)
    newer = writer.remember("parcel for the neighbour")
    assert reader.find("parcel neighbour") == [newer]
    # Made earlier (on a container whose write landed late), stored now: still read.
    store.clock.advance(seconds=-30)
    older = writer.remember("parcel at the post office")
    assert set(reader.find("parcel", top=5)) == {newer, older}
    index = reader.index.index_of("alice")
    assert index is not None and len(index) == 2  # re-read ids were deduplicated


def test_cold_container_loads_the_snapshot_and_catches_up(world) -> None:  # type: ignore[no-untyped-def]
    store, s3, clock = world
    first = Box(store, s3, clock)
    for i in range(12):
        store.clock.advance(seconds=1)
        first.remember(f"note number {i} about topic{i}")
    first.find("topic3")
    assert first.index.events["snapshot_save"] == 1
    assert s3.calls["put_object"] == 1
    store.clock.advance(seconds=1)
    late = first.remember("note about topic99")
    first.memories.forget("alice", first.find("topic3", top=1)[0])
    store.reads.clear()
    cold = Box(store, s3, clock)
    assert cold.find("topic99", top=1) == [late]
    assert cold.index.events["snapshot_load"] == 1 and cold.index.events["full_load"] == 0
    assert store.reads["all_items"] == 0
    assert store.reads["item_rows"] <= 13  # the changes since the snapshot (and the margin), not everything
    index = cold.index.index_of("alice")
    assert index is not None and len(index) == 12


def test_unreadable_or_stale_snapshots_fall_back_to_the_table(world) -> None:  # type: ignore[no-untyped-def]
    store, s3, clock = world
    first = Box(store, s3, clock)
    for i in range(12):
        first.remember(f"fact {i}")
    first.find("fact")
    key = ("bucket", "index/alice.snapshot")
    s3.objects[key] = s3.objects[key][:-3] + b"xyz"  # tampered
    broken = Box(store, s3, clock)
    assert len(broken.find("fact", top=20)) == 12
    assert broken.index.events["snapshot_unreadable"] == 1 and broken.index.events["full_load"] == 1
    # Old, and changed since: change-log entries it would need may have expired.
    clock.advance(4 * 24 * 3600)
    first.remember("fact 12")
    old = Box(store, s3, clock)
    assert len(old.find("fact", top=20)) == 13
    assert old.index.events["snapshot_too_old"] == 1


def test_periodic_full_reload_bounds_staleness(world) -> None:  # type: ignore[no-untyped-def]
    store, _, clock = world
    box = Box(store, None, clock, full_reload_seconds=900)
    box.remember("a thing to find")
    box.find("thing")
    # A row no change log announced (as if written outside the service): found at the next reload.
    store.items[("alice", lowest_id_at(0))] = (store.get("alice", box.find("thing")[0]), unit_vectors(1)[0].tobytes())  # type: ignore[assignment]
    clock.advance(901)
    box.find("thing")
    assert box.index.events["full_reload"] == 1 and box.index.events["reload_found_drift"] == 1


def test_owners_are_kept_in_a_bounded_lru(world) -> None:  # type: ignore[no-untyped-def]
    store, _, clock = world
    box = Box(store, None, clock, max_owners=2)
    for owner in ("a", "b", "c"):
        box.memories.remember(owner, content=f"{owner} memory", category="general", metadata={})
        box.memories.search(owner, "memory", top=1)
    assert box.index.index_of("a") is None and box.index.index_of("c") is not None
    assert box.index.events["owner_evicted"] == 1


def test_index_and_design_scan_agree(world) -> None:  # type: ignore[no-untyped-def]
    store, _, clock = world
    box = Box(store, None, clock, ranking="dense")  # the design's scan ranks by the cosine alone
    scan = MemoryService(store, HashingEmbedder(), store.clock, index=DesignScanSearch(store))
    for i, text in enumerate(["cat miso tuna", "dog rex bones", "cat tom milk", "dentist tuesday", "cat food"]):
        box.remember(text, category="pets" if "cat" in text or "dog" in text else "health")
        store.clock.advance(seconds=i + 1)
    for filters in ({}, {"category": "pets"}, {"min_score": 0.3}, {"category": "health", "min_score": 0.1}):
        indexed = box.memories.search("alice", "cat", top=3, **filters)  # type: ignore[arg-type]
        scanned = scan.search("alice", "cat", top=3, **filters)  # type: ignore[arg-type]
        assert [(h.memory.id, round(h.score, 6)) for h in indexed] == [
            (h.memory.id, round(h.score, 6)) for h in scanned
        ]


# -- configuration -----------------------------------------------------------------------------------


def test_search_settings_come_from_the_environment() -> None:
    from pai_core.config import ConfigError, Settings

    default = Settings.from_env({})
    assert (default.search_mode, default.search_ann_threshold, default.search_full_reload_seconds) == (
        "index",
        50_000,
        6 * 3600,
    )
    chosen = Settings.from_env(
        {"PAI_SEARCH_MODE": "design-scan", "PAI_SEARCH_ANN_THRESHOLD": "0", "PAI_SEARCH_FULL_RELOAD_MINUTES": "15"}
    )
    assert (chosen.search_mode, chosen.search_ann_threshold, chosen.search_full_reload_seconds) == (
        "design-scan",
        0,
        900,
    )
    with pytest.raises(ConfigError, match="PAI_SEARCH_MODE"):
        Settings.from_env({"PAI_SEARCH_MODE": "fast"})
    with pytest.raises(ConfigError, match="PAI_SEARCH_ANN_THRESHOLD"):
        Settings.from_env({"PAI_SEARCH_ANN_THRESHOLD": "-1"})


# -- the change log's writes -------------------------------------------------------------------------


class ScriptedDynamo:
    """Records writes in order; the writes of one partition suffix can fail."""

    def __init__(self, *, fail: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def _record(self, operation: str, partition: str) -> dict:
        self.calls.append((operation, partition))
        if self.fail is not None and partition.endswith(self.fail):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {}}, operation)
        return {}

    def put_item(self, **request: Any) -> dict:
        return self._record("PutItem", request["Item"]["owner"]["S"])

    def delete_item(self, **request: Any) -> dict:
        return self._record("DeleteItem", request["Key"]["owner"]["S"])

    def update_item(self, **request: Any) -> dict:
        return self._record("UpdateItem", request["Key"]["owner"]["S"])

    def query(self, **request: Any) -> dict:
        self._record("Query", request["ExpressionAttributeValues"][":owner"]["S"])
        return {"Items": []}


def repository(client: ScriptedDynamo) -> DynamoMemoryRepository:
    changes = DynamoChangeLog(client, "t", clock=FixedClock(), sleep=lambda _: None)  # type: ignore[arg-type]
    return DynamoMemoryRepository(client, "t", fake_cipher(), context_name="t", changes=changes, sleep=lambda _: None)  # type: ignore[arg-type]


def test_stores_and_deletes_land_before_their_entry_and_the_head_moves() -> None:
    client = ScriptedDynamo()
    repo = repository(client)
    memory = Memory(id="m1", content="x", category="general", metadata={}, created_at=FixedClock().now())
    repo.add("alice", memory, unit_vectors(1)[0])
    assert repo.delete("alice", "m1")
    assert client.calls == [
        ("PutItem", "alice"),
        ("PutItem", "alice#changes"),
        ("UpdateItem", "alice#changes"),
        ("DeleteItem", "alice"),
        ("PutItem", "alice#changes"),
        ("UpdateItem", "alice#changes"),
        ("Query", "alice#history"),  # its earlier versions go too
    ]


@pytest.mark.parametrize("failing", ["#changes", "#history"])
def test_a_failed_entry_head_or_history_delete_does_not_undo_the_change(failing: str) -> None:
    client = ScriptedDynamo(fail=failing)
    repo = repository(client)
    memory = Memory(id="m1", content="x", category="general", metadata={}, created_at=FixedClock().now())
    repo.add("alice", memory, unit_vectors(1)[0])  # stored: the log is only a signal
    assert repo.delete("alice", "m1")  # deleted: search fetches hits by key, so it cannot come back
