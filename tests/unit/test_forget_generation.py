"""The owner's generation against in-memory fakes: a forget moves it first, a warm index of another
container starts over when it moved, and no snapshot is loaded or written across it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pai_core.crypto import KeyMaterialDestroyed
from pai_core.models import ChangeStamp
from pai_core.search import IndexPolicy, LiveMemoryIndex
from pai_core.search.snapshot import decode
from pai_core.services import AccountService, MemoryService
from tests.fakes import FixedClock, HashingEmbedder, InMemoryConversationRepository, fake_keyring
from tests.fakes_search import InMemoryMemoryStore, ManualClock

OWNER = "alice"


class RecordingSnapshots:
    """A snapshot bucket of one version per owner; `during_save` runs as the write lands."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.saves = 0
        self.during_save: Callable[[], None] | None = None

    def load(self, owner: str) -> bytes | None:
        return self.objects.get(owner)

    def save(self, owner: str, payload: bytes) -> None:
        self.saves += 1
        if self.during_save is not None:
            self.during_save()
        self.objects[owner] = payload

    def purge(self, owner: str) -> int:
        return 1 if self.objects.pop(owner, None) is not None else 0


class Container:
    """One composition root over the shared table and bucket."""

    def __init__(self, store: InMemoryMemoryStore, snapshots: RecordingSnapshots, clock: ManualClock) -> None:
        self.dropped_keys: list[str] = []
        self.index = LiveMemoryIndex(
            store,
            {"memory": store},
            snapshots,
            dimensions=HashingEmbedder.dimensions,
            policy=IndexPolicy(ann=None, snapshot_min_vectors=5, snapshot_rebuild_changes=3),
            wall_clock=clock,
            monotonic=clock,
            on_generation_moved=self.dropped_keys.append,
        )
        self.memories = MemoryService(store, HashingEmbedder(), store.clock, index=self.index)

    def remember(self, text: str) -> str:
        return self.memories.remember(OWNER, content=text, category="general", metadata={}).id

    def find(self, text: str) -> list[str]:
        return [hit.memory.id for hit in self.memories.search(OWNER, text, top=50)]

    def indexed(self) -> set[str]:
        index = self.index.index_of(OWNER)
        return set() if index is None else set(index.ids())


@pytest.fixture
def world() -> tuple[InMemoryMemoryStore, RecordingSnapshots, ManualClock]:
    return InMemoryMemoryStore(clock=FixedClock()), RecordingSnapshots(), ManualClock()


def forget(store: InMemoryMemoryStore, snapshots: RecordingSnapshots) -> None:
    """What AccountService.forget does to the shared table and bucket, in its order."""
    store.move_generation(OWNER)
    store.purge(OWNER)
    snapshots.purge(OWNER)


def test_a_warm_index_elsewhere_starts_over_when_the_generation_moved(world) -> None:  # type: ignore[no-untyped-def]
    store, snapshots, clock = world
    first, second = Container(store, snapshots, clock), Container(store, snapshots, clock)
    doomed = {first.remember(f"fact {i} about the garden") for i in range(8)}
    assert set(second.find("garden")) == doomed
    forget(store, snapshots)

    assert second.find("garden") == []
    assert second.indexed() == set() and second.dropped_keys == [OWNER]
    assert second.index.events["generation_moved"] == 1
    fresh = {first.remember(f"new fact {i} about the garden") for i in range(6)}
    assert set(second.find("garden")) == fresh
    (payload,) = snapshots.objects.values()  # written from the new memories, under the new generation
    snapshot = decode(payload)
    assert snapshot.generation == 1 and {ref.id for ref in snapshot.refs if ref} == fresh


def test_a_warm_search_with_nothing_changed_still_reads_only_the_head(world) -> None:  # type: ignore[no-untyped-def]
    store, snapshots, clock = world
    box = Container(store, snapshots, clock)
    box.remember("umbrella in the hallway")
    box.find("umbrella")
    store.reads.clear()
    for _ in range(3):
        box.find("umbrella")
    assert store.reads == {"change_stamp": 3}  # the generation rides on the same read


def test_a_snapshot_of_an_older_generation_is_never_loaded(world) -> None:  # type: ignore[no-untyped-def]
    store, snapshots, clock = world
    writer = Container(store, snapshots, clock)
    for i in range(6):
        writer.remember(f"note {i} on the boat")
    writer.find("boat")
    assert decode(snapshots.objects[OWNER]).generation == 0
    store.move_generation(OWNER)  # a forget whose snapshot purge has not run (or failed)
    store.purge(OWNER)
    cold = Container(store, snapshots, clock)
    assert cold.find("boat") == [] and cold.indexed() == set()
    assert cold.index.events["snapshot_old_generation"] == 1 and cold.index.events["snapshot_load"] == 0


def test_no_snapshot_is_written_when_the_generation_moved_after_the_searchs_read(world) -> None:  # type: ignore[no-untyped-def]
    store, snapshots, clock = world
    box = Container(store, snapshots, clock)
    for i in range(6):
        box.remember(f"item {i} in the attic")
    reads = 0
    real_stamp = store.change_stamp

    def stamp_then_forget(owner: str) -> ChangeStamp:
        nonlocal reads
        reads += 1
        if reads == 2:  # the load read the head once; a forget lands just before the pre-write read
            forget(store, snapshots)
        return real_stamp(owner)

    store.change_stamp = stamp_then_forget  # type: ignore[method-assign]
    box.find("attic")
    assert snapshots.saves == 0 and snapshots.objects == {}
    assert box.index.events["snapshot_refused_generation"] == 1 and box.indexed() == set()


def test_a_snapshot_written_across_a_forget_is_taken_back(world) -> None:  # type: ignore[no-untyped-def]
    store, snapshots, clock = world
    box = Container(store, snapshots, clock)
    for i in range(6):
        box.remember(f"item {i} in the cellar")
    snapshots.during_save = lambda: forget(store, snapshots)  # its purge runs before the write lands
    assert box.find("cellar") == []
    assert snapshots.saves == 1 and snapshots.objects == {}
    assert box.index.events["snapshot_withdrawn"] == 1 and box.indexed() == set()


def test_forget_moves_the_generation_before_it_destroys_any_key() -> None:
    store = InMemoryMemoryStore(clock=FixedClock())
    keyring = fake_keyring()
    keyring.active_key(OWNER)
    steps: list[str] = []
    real_move, real_destroy = store.move_generation, keyring.destroy

    def move(owner: str) -> int:
        steps.append("generation")
        return real_move(owner)

    def destroy(owner: str) -> int:
        steps.append(f"keys (generation {store.generations[owner]})")
        return real_destroy(owner)

    store.move_generation = move  # type: ignore[method-assign]
    keyring.destroy = destroy  # type: ignore[method-assign]
    AccountService(store, InMemoryConversationRepository(), keyring, generations=store).forget(OWNER)
    assert steps == ["generation", "keys (generation 1)"]
    assert store.change_stamp(OWNER).generation == 1  # the purge kept the head


def test_a_snapshot_never_makes_a_forgotten_owner_a_key() -> None:
    keyring = fake_keyring()
    keyring.active_key(OWNER)
    keyring.destroy(OWNER)
    with pytest.raises(KeyMaterialDestroyed):
        keyring.active_key(OWNER, create=False)
    # A new memory of the same id still gets one, under a version the destroyed key never had.
    assert keyring.active_key(OWNER).version == 2
