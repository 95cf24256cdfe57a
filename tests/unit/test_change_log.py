"""The change log as a search index reads it: updates re-rank in every container, entries past the
index's position are applied once each whatever order they land in, entries of a kind without a
reader are skipped, and the bounds the log relies on are checked in code (and against the template)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pai_core.models import ItemRef, MemoryEdit
from pai_core.search import IndexPolicy, LiveMemoryIndex
from pai_core.search.changes import CHANGE_ENTRY_TTL_SECONDS, WRITE_LANDS_WITHIN_SECONDS
from pai_core.search.hybrid import ref_key
from pai_core.services import MemoryService
from pai_local.template import Template
from tests.fakes import FixedClock, HashingEmbedder
from tests.fakes_search import InMemoryMemoryStore, ManualClock

OWNER = "alice"


class Box:
    """One container: its own index and memory service over the shared store."""

    def __init__(self, store: InMemoryMemoryStore, clock: ManualClock) -> None:
        self.store = store
        self.index = LiveMemoryIndex(store, {"memory": store}, None, dimensions=384, wall_clock=clock, monotonic=clock)
        self.embedder = HashingEmbedder()
        self.memories = MemoryService(store, self.embedder, store.clock, index=self.index)

    def remember(self, text: str) -> str:
        return self.memories.remember(OWNER, content=text, category="general", metadata={}).id

    def update(self, memory_id: str, text: str) -> None:
        embedding = self.embedder.embed([text])[0]
        edit = MemoryEdit(content=text)
        assert self.store.update(OWNER, memory_id, edit, embedding=embedding, reason="moved", at=self.store.clock.now())

    def find(self, text: str, top: int = 5) -> list[tuple[str, float]]:
        return [(hit.memory.id, hit.score) for hit in self.memories.search(OWNER, text, top=top)]


@pytest.fixture
def world() -> tuple[InMemoryMemoryStore, ManualClock]:
    return InMemoryMemoryStore(clock=FixedClock()), ManualClock()


def test_an_update_in_one_container_re_ranks_in_another_at_once(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    writer, reader = Box(store, clock), Box(store, clock)
    dentist = writer.remember("the dentist appointment is on tuesday")
    writer.remember("the swimming pool closes early")
    assert reader.find("dentist tuesday")[0][0] == dentist
    store.clock.advance(seconds=1)
    writer.update(dentist, "the yoga class is on friday evening")

    assert reader.find("yoga class friday")[0][0] == dentist  # ranked by its new content
    assert dentist not in {memory_id for memory_id, score in reader.find("dentist tuesday") if score > 0.3}
    index = reader.index.index_of(OWNER)
    assert index is not None
    key = ref_key(ItemRef("memory", dentist))
    # Both halves hold the new content: the old words no longer match it.
    assert index.lexical.score_keys("yoga friday", [key])[0] > 0
    assert index.lexical.score_keys("dentist tuesday", [key])[0] == 0
    assert reader.index.events["full_load"] == 1 and store.reads["all_items"] == 1  # no reload: the log said it


def test_entries_past_the_position_are_applied_once_each_in_any_landing_order(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    writer, reader = Box(store, clock), Box(store, clock)
    store.clock.advance(seconds=10)
    kept = writer.remember("a parcel for the neighbour")
    reader.find("parcel")
    # Put, update and delete of one memory, and an entry made earlier that lands last (inside the margin).
    store.clock.advance(seconds=1)
    gone = writer.remember("a parcel at the post office")
    writer.update(gone, "a parcel at the depot")
    writer.memories.forget(OWNER, gone)
    store.clock.advance(seconds=-30)
    late = writer.remember("a parcel in the garden shed")
    store.reads.clear()
    assert {memory_id for memory_id, _ in reader.find("parcel")} == {kept, late}
    # Every entry named the items to read; each item was read once, by key.
    assert store.reads["changes_after"] == 1 and store.reads["items_by_id"] == 1
    index = reader.index.index_of(OWNER)
    assert index is not None and index.ids() == {kept, late}
    # The same entries again (the margin re-reads them) are not applied twice.
    store.stamps[OWNER] += 1
    store.reads.clear()
    reader.find("parcel")
    assert store.reads["changes_after"] == 1 and store.reads["items_by_id"] == 0


def test_a_delete_reaches_another_container_through_the_log_alone(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    writer, reader = Box(store, clock), Box(store, clock)
    doomed = writer.remember("the garden gate code is 4321")
    assert reader.find("garden gate code")[0][0] == doomed
    writer.memories.forget(OWNER, doomed)
    assert reader.find("garden gate code") == []
    index = reader.index.index_of(OWNER)
    assert index is not None and ItemRef("memory", doomed) not in index  # dropped, not only filtered


def test_entries_of_a_kind_without_a_reader_are_skipped(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    box = Box(store, clock)
    memory_id = box.remember("the boat is blue")
    box.find("boat")
    store.record(OWNER, [("put", ItemRef("passage", "doc-1#0"))])
    assert [found for found, _ in box.find("boat")] == [memory_id]
    assert box.index.events["entries_of_unknown_kind"] == 1


def test_add_many_writes_one_entry_per_memory_and_moves_the_head_once(world) -> None:  # type: ignore[no-untyped-def]
    store, clock = world
    box = Box(store, clock)
    box.find("warm up")
    embedder = HashingEmbedder()
    texts = ["imported note about apples", "imported note about pears", "imported note about plums"]
    memories = [
        dataclasses.replace(
            box.memories.remember("other", content=text, category="general", metadata={}), origin="import"
        )
        for text in texts
    ]
    before = store.stamps[OWNER]
    store.add_many(OWNER, list(zip(memories, embedder.embed(texts), strict=True)))
    assert store.stamps[OWNER] == before + 1
    assert [entry.op for entry in store.entries[OWNER]] == ["put"] * 3
    assert {memory_id for memory_id, _ in box.find("imported note", top=10)} == {m.id for m in memories}


# -- the bounds, in code -----------------------------------------------------------------------------


def test_the_policy_refuses_a_margin_shorter_than_a_write_can_take() -> None:
    with pytest.raises(ValueError, match="id_margin_seconds"):
        IndexPolicy(id_margin_seconds=WRITE_LANDS_WITHIN_SECONDS - 1)
    IndexPolicy(id_margin_seconds=WRITE_LANDS_WITHIN_SECONDS)


@pytest.mark.parametrize("name", ["snapshot_max_age_seconds", "full_reload_seconds"])
def test_the_policy_refuses_to_outlive_the_entries_it_needs(name: str) -> None:
    margin = IndexPolicy().id_margin_seconds
    with pytest.raises(ValueError, match=name):
        IndexPolicy(**{name: CHANGE_ENTRY_TTL_SECONDS - margin})  # type: ignore[arg-type]
    IndexPolicy(**{name: CHANGE_ENTRY_TTL_SECONDS - margin - 1})  # type: ignore[arg-type]


def test_the_default_policy_holds() -> None:
    policy = IndexPolicy()
    assert policy.id_margin_seconds >= WRITE_LANDS_WITHIN_SECONDS
    assert max(policy.snapshot_max_age_seconds, policy.full_reload_seconds) + policy.id_margin_seconds < (
        CHANGE_ENTRY_TTL_SECONDS
    )


def test_every_function_of_the_template_ends_before_a_change_log_write_could_land_unseen() -> None:
    """A change-log entry is written by a function; the id margin covers the longest a function runs."""
    functions = Template.load(Env="dev").of_type("AWS::Lambda::Function")
    assert functions
    for name, spec in functions.items():
        timeout = spec["Properties"].get("Timeout", 3)  # Lambda's default when none is set
        if spec["Properties"]["Handler"] == "handlers.document_ingest.handler":
            # It runs for minutes; its change-log entries are written under a deadline of their own.
            from pai_core.adapters.dynamodb_documents import ANNOUNCE_SECONDS

            assert ANNOUNCE_SECONDS < WRITE_LANDS_WITHIN_SECONDS
            continue
        assert int(timeout) < WRITE_LANDS_WITHIN_SECONDS, name


def test_a_snapshot_round_trip_keeps_each_items_terms_and_the_position(world) -> None:  # type: ignore[no-untyped-def]
    from pai_core.search.hybrid import HybridIndex
    from pai_core.search.snapshot import decode, encode

    store, clock = world
    box = Box(store, clock)
    memory_id = box.remember('ünïcode text with a\nnewline and "quotes"')
    box.find("text")
    index = box.index.index_of(OWNER)
    assert index is not None
    snapshot = decode(encode(index.snapshot(position="0123", stamp=3, taken_at=1.5, generation=0)))
    assert snapshot.position == "0123" and snapshot.refs == [ItemRef("memory", memory_id)]
    restored = HybridIndex.from_snapshot(snapshot, ann=None)
    assert restored.lexical.search("ÜNÏCODE quotes", 5) == index.lexical.search("ünïcode quotes", 5)
    assert [key for key, _ in restored.lexical.search("newline", 5)] == [ref_key(ItemRef("memory", memory_id))]
    assert np.isclose(float(np.linalg.norm(snapshot.vectors[0])), 1.0, atol=1e-3)


def test_a_fresh_load_does_not_read_again_what_it_loaded(world) -> None:  # type: ignore[no-untyped-def]
    """Entries already written when a load starts are of changes the load itself reads."""
    store, clock = world
    writer, reader = Box(store, clock), Box(store, clock)
    for i in range(5):
        writer.remember(f"note {i} about the boat")
    reader.find("boat")
    store.reads.clear()
    newest = writer.remember("a note about the harbour")
    assert reader.find("harbour", top=1)[0][0] == newest
    assert store.reads["item_rows"] == 1  # the one memory stored since, not the five before
