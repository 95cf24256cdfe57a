"""A container's search index under threads: a store landing while another thread (a search, say the
learning function's) builds or catches up the same owner's index is never lost from it.

Each interleaving is forced with events, not timing: the index's read of the table (or of the
changed items) is held open while a store lands, then let go."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pai_core.models import ChangeOp, IndexedItem, ItemRef
from pai_core.search import IndexPolicy, LiveMemoryIndex
from pai_core.services import MemoryService
from tests.fakes import FixedClock, HashingEmbedder
from tests.fakes_search import InMemoryMemoryStore, ManualClock

OWNER = "alice"
DIMS = 384
WAIT = 30.0  # a bound on a hang only: every wait below is released by the test itself
SPARE_KEY = "the spare key is under the blue flowerpot"


@dataclass
class HeldStore(InMemoryMemoryStore):
    """Reads of the table (all_items) or of changed items (items_by_id) that, once `hold` names them,
    stop after reading and wait for `release`: a store can land between the read and the index
    being installed."""

    hold: set[str] = field(default_factory=set)
    read_done: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    recorded: threading.Event = field(default_factory=threading.Event)

    def _held(self, what: str, rows: list[IndexedItem]) -> list[IndexedItem]:
        if what in self.hold:
            self.hold.discard(what)
            self.read_done.set()
            assert self.release.wait(WAIT)
        return rows

    def all_items(self, owner: str) -> list[IndexedItem]:
        return self._held("all_items", super().all_items(owner))

    def items_by_id(self, owner: str, ids: Sequence[str]) -> list[IndexedItem]:
        return self._held("items_by_id", super().items_by_id(owner, ids))

    def record(self, owner: str, changes: Sequence[tuple[ChangeOp, ItemRef]]) -> None:
        super().record(owner, changes)
        self.recorded.set()


class Container:
    """One container: its index and memory service over the shared store."""

    def __init__(self, store: HeldStore) -> None:
        clock = ManualClock()
        self.index = LiveMemoryIndex(
            store, {"memory": store}, None, dimensions=DIMS, policy=IndexPolicy(), wall_clock=clock, monotonic=clock
        )
        self.memories = MemoryService(store, HashingEmbedder(), store.clock, index=self.index)

    def remember(self, text: str) -> str:
        return self.memories.remember(OWNER, content=text, category="general", metadata={}).id

    def find(self, text: str, top: int = 3) -> list[str]:
        return [hit.memory.id for hit in self.memories.search(OWNER, text, top=top)]


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def store_while_held(store: HeldStore, reader: Container, writer: Container, hold: str) -> str:
    """`reader` searches (in a thread) and is held in the read named by `hold`; meanwhile `writer`
    stores the spare key (in another thread: its own write waits for the reader's lock); then the
    read is let go. The spare key's id."""
    store.hold.add(hold)
    store.read_done.clear()
    store.release.clear()
    store.recorded.clear()
    search, found = in_thread(lambda: reader.find("spare key"))
    assert store.read_done.wait(WAIT)
    stored, ids = in_thread(lambda: writer.remember(SPARE_KEY))
    assert store.recorded.wait(WAIT)  # the item, its entry and the head have landed
    store.release.set()
    search.join(WAIT)
    stored.join(WAIT)
    assert not search.is_alive() and not stored.is_alive()
    assert ids[0] not in found[0]  # that search read the table before the key landed
    return str(ids[0])


def fill(container: Container, count: int = 21) -> None:
    for n in range(count):
        container.remember(f"reading list item {n} a book about lighthouses")


def test_a_store_landing_during_a_cold_load_reaches_the_index() -> None:
    store = HeldStore(clock=FixedClock())
    box = Container(store)
    fill(box)
    spare = store_while_held(store, box, box, "all_items")
    assert box.find("where is the spare key")[0] == spare
    index = box.index.index_of(OWNER)
    assert index is not None and ItemRef("memory", spare) in index


def test_a_store_by_another_container_during_a_cold_load_is_caught_up() -> None:
    store = HeldStore(clock=FixedClock())
    reader, writer = Container(store), Container(store)
    fill(writer)
    spare = store_while_held(store, reader, writer, "all_items")
    # The load read the table before the key landed; its change-log entry is read at the next search.
    assert reader.find("where is the spare key")[0] == spare


def test_a_store_landing_during_a_catch_up_reaches_the_index() -> None:
    store = HeldStore(clock=FixedClock())
    box, other = Container(store), Container(store)
    fill(box)
    box.find("warm up")
    other.remember("reading list item 21 a book about lighthouses")  # the next search catches up
    spare = store_while_held(store, box, box, "items_by_id")
    assert box.find("where is the spare key")[0] == spare
    assert box.index.events["full_load"] == 1  # found without a reload


def test_a_store_by_another_container_during_a_catch_up_is_caught_up() -> None:
    store = HeldStore(clock=FixedClock())
    reader, writer = Container(store), Container(store)
    fill(writer)
    reader.find("warm up")
    writer.remember("reading list item 21 a book about lighthouses")
    spare = store_while_held(store, reader, writer, "items_by_id")
    assert reader.find("where is the spare key")[0] == spare
    assert reader.index.events["full_load"] == 1
