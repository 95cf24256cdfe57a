"""Hybrid ranking wired into the live index: both halves stay in step on every path (a container's
own changes, another container's through the change log, snapshots), filters hold, and chat keeps
only relevant memories in its prompt."""

from __future__ import annotations

import numpy as np
import pytest

from pai_core.adapters.s3 import S3SnapshotStore
from pai_core.config import ConfigError, Settings
from pai_core.models import IndexedItem, ItemRef, MemoryEdit
from pai_core.search import AnnSettings, IndexPolicy, LiveMemoryIndex
from pai_core.search.fusion import CHAT_RELEVANCE_FLOOR, DENSE_WEIGHT
from pai_core.search.hybrid import HybridIndex, ref_key, time_of
from pai_core.search.snapshot import decode, encode
from pai_core.services import MemoryService
from pai_core.services.chat import ChatService
from pai_core.services.prompt import MEMORY_PREAMBLE
from tests.fakes import FixedClock, HashingEmbedder, InMemoryConversationRepository, ScriptedChatModel, fake_cipher
from tests.fakes_search import FakeS3Client, InMemoryMemoryStore, ManualClock

OWNER = "alice"
EMBEDDER = HashingEmbedder()
CIPHER = fake_cipher()  # one "KMS" and key store for every container of this module
CIPHER.keyring.active_key(OWNER)  # as her first stored memory would have made it


def item(number: int, text: str, category: str = "general") -> IndexedItem:
    # Time-ordered ids a minute apart: each item is its own sitting, no time neighbours.
    item_id = f"{number * 60_000:012x}" + "0" * 20
    vector = EMBEDDER.embed([text])[0].astype("<f4").tobytes()
    return IndexedItem(ref=ItemRef("memory", item_id), category=category, vector=vector, text=text)


def query(index: HybridIndex, text: str, top: int = 3, **filters: object) -> list[tuple[str, float]]:
    found = index.search(EMBEDDER.embed([text])[0], top, text=text, **filters)  # type: ignore[arg-type]
    return [(hit.ref.id, hit.score) for hit in found]


def in_step(index: HybridIndex) -> bool:
    return index.lexical.keys() == {ref_key(ref) for ref in index.refs()}


def test_the_halves_stay_in_step_through_updates_removals_and_compaction() -> None:
    index = HybridIndex.empty(384, ann=None)
    items = [item(i, f"note number {i} about topic{i % 7}") for i in range(3000)]
    index.add(items)
    assert in_step(index) and len(index) == 3000
    index.put([item(5, "the plumber comes on thursday")])
    assert query(index, "plumber thursday", 1)[0][0] == items[5].ref.id
    index.remove([it.ref for it in items[1000:2500]])  # enough to compact both halves
    assert in_step(index) and len(index) == 1500
    assert items[1200].ref.id not in {found for found, _ in query(index, "note number 1200 topic3", 10)}
    assert query(index, "note number 2700 topic5", 1)[0][0] == items[2700].ref.id


def test_hybrid_scores_are_the_fused_relevance_and_min_score_filters_them() -> None:
    index = HybridIndex.empty(384, ann=None)
    index.add([item(1, "my cat miso likes tuna"), item(2, "dentist on tuesday"), item(3, "tuna salad recipe")])
    found = query(index, "cat miso", 3)
    assert found[0][0] == item(1, "").ref.id
    assert all(-DENSE_WEIGHT <= score <= 1.0 for _, score in found)
    floor = (found[0][1] + found[1][1]) / 2
    assert query(index, "cat miso", 3, min_score=floor) == found[:1]
    dense = index.search(EMBEDDER.embed(["cat miso"])[0], 3, text="cat miso", ranking="dense")
    cosine = float(EMBEDDER.embed(["cat miso"])[0] @ EMBEDDER.embed(["my cat miso likes tuna"])[0])
    assert dense[0].score == pytest.approx(cosine, abs=1e-5)  # "dense": the cosine, as before


@pytest.mark.parametrize("ann", [None, AnnSettings(threshold=300, expansion_search=256)])
def test_a_category_filter_holds_on_both_sides_exact_and_approximate(ann: AnnSettings | None) -> None:
    index = HybridIndex.empty(384, ann=ann)
    index.add([item(i, f"shared words entry {i}", category="work" if i % 2 else "home") for i in range(600)])
    index.add([item(1000, "the boiler makes a noise", category="home")])
    assert index.vectors.approximate == (ann is not None)
    # The lexical side alone would propose the boiler for "boiler": the category rules it out.
    assert item(1000, "").ref.id not in {found for found, _ in query(index, "boiler noise", 5, category="work")}
    work = query(index, "shared words entry", 20, category="work")
    assert len(work) == 20 and all(int(found[-8:], 16) == 0 for found, _ in work)
    assert all(index.category(ItemRef("memory", found)) == "work" for found, _ in work)
    assert query(index, "boiler noise", 1, category="home")[0][0] == item(1000, "").ref.id


def test_a_snapshot_holds_the_lexical_index_and_answers_the_same() -> None:
    index = HybridIndex.empty(384, ann=None)
    index.add([item(i, f"entry {i} mentions word{i % 13} and word{i % 5}") for i in range(200)])
    index.remove([item(7, "").ref])
    payload = encode(index.snapshot(position="p", stamp=1, taken_at=2.0, generation=0))
    assert b"mention" in index.lexical.to_bytes()  # the statistics are the content (stemmed): sealed by the store
    restored = HybridIndex.from_snapshot(decode(payload), ann=None)
    for text in ("word3 word4", "entry 12", "mentions word7"):
        assert [found for found, _ in query(restored, text, 5)] == [found for found, _ in query(index, text, 5)]
        assert np.allclose([s for _, s in query(restored, text, 5)], [s for _, s in query(index, text, 5)], atol=1e-3)


class Box:
    """One container over the shared store and snapshot bucket."""

    def __init__(self, store: InMemoryMemoryStore, s3: FakeS3Client | None, clock: ManualClock) -> None:
        snapshots = S3SnapshotStore(s3, "bucket", CIPHER) if s3 is not None else None  # type: ignore[arg-type]
        self.index = LiveMemoryIndex(
            store,
            {"memory": store},
            snapshots,
            dimensions=384,
            policy=IndexPolicy(snapshot_min_vectors=5, snapshot_rebuild_changes=3),
            wall_clock=clock,
            monotonic=clock,
        )
        self.store = store
        self.memories = MemoryService(store, HashingEmbedder(), store.clock, index=self.index)

    def remember(self, text: str) -> str:
        memory_id = self.memories.remember(OWNER, content=text, category="general", metadata={}).id
        self.store.clock.advance(seconds=3600)
        return memory_id

    def find(self, text: str) -> list[str]:
        return [hit.memory.id for hit in self.memories.search(OWNER, text, top=3, min_score=0.2)]


def test_another_containers_changes_reach_the_lexical_half_through_the_log() -> None:
    store, clock, s3 = InMemoryMemoryStore(clock=FixedClock()), ManualClock(), FakeS3Client()
    writer, reader = Box(store, s3, clock), Box(store, s3, clock)
    kept = [writer.remember(f"filler memory number {i}") for i in range(6)]
    plumber = writer.remember("the plumber comes on thursday")
    assert reader.find("plumber") == [plumber]
    embedding = HashingEmbedder().embed(["the electrician comes on friday"])[0]
    edit = MemoryEdit(content="the electrician comes on friday")
    assert store.update(OWNER, plumber, edit, embedding=embedding, reason="moved", at=store.clock.now())
    assert reader.find("electrician") == [plumber] and reader.find("plumber") == []
    writer.memories.forget(OWNER, kept[0])
    index = reader.index.index_of(OWNER)
    assert reader.find("filler memory number 0")[:1] != [kept[0]]
    assert index is not None and ref_key(ItemRef("memory", kept[0])) not in index.lexical
    assert reader.index.events["full_load"] == 1

    # A cold container starts from the snapshot the reader wrote, lexical half included.
    assert reader.index.events["snapshot_save"] >= 1
    assert s3.objects and all(b"electrician" not in body and b"filler" not in body for body in s3.objects.values())
    cold = Box(store, s3, clock)
    assert cold.find("electrician") == [plumber]
    assert cold.index.events["snapshot_load"] == 1 and cold.index.events["full_load"] == 0


def test_a_snapshot_whose_lexical_half_does_not_load_is_rebuilt_from_the_table() -> None:
    store, clock, s3 = InMemoryMemoryStore(clock=FixedClock()), ManualClock(), FakeS3Client()
    writer = Box(store, s3, clock)
    for i in range(8):
        writer.remember(f"filler memory number {i}")
    plumber = writer.remember("the plumber comes on thursday")
    writer.find("plumber")
    assert writer.index.events["snapshot_save"] == 1
    index = writer.index.index_of(OWNER)
    assert index is not None
    broken = index.snapshot(position="0", stamp=0, taken_at=clock(), generation=0)
    object.__setattr__(broken, "lexical", b"damaged")
    assert writer.index._snapshots is not None
    writer.index._snapshots.save(OWNER, encode(broken))
    cold = Box(store, s3, clock)
    assert cold.find("plumber") == [plumber]
    assert cold.index.events["snapshot_unreadable"] == 1 and cold.index.events["full_load"] == 1


def test_ranking_is_hybrid_by_default_and_can_be_turned_to_dense() -> None:
    assert Settings().search_ranking == "hybrid" and IndexPolicy().ranking == "hybrid"
    assert Settings.from_env({"PAI_SEARCH_RANKING": "dense"}).search_ranking == "dense"
    with pytest.raises(ConfigError, match="PAI_SEARCH_RANKING"):
        Settings.from_env({"PAI_SEARCH_RANKING": "bm25"})


def test_chat_puts_a_related_memory_in_the_prompt_and_leaves_an_unrelated_one_out() -> None:
    store, clock = InMemoryMemoryStore(clock=FixedClock()), ManualClock()
    box = Box(store, None, clock)
    related = box.remember("my sister anna lives in lisbon")
    unrelated = box.remember("the wifi password is hunter2")
    model = ScriptedChatModel()
    chat = ChatService(
        InMemoryConversationRepository(), box.memories, model, store.clock, history_max_turns=10, max_output_tokens=64
    )
    message = "when is anna visiting from lisbon?"
    # Without the floor both would go in: top 4 of two memories.
    assert {hit.memory.id for hit in box.memories.search(OWNER, message, top=4)} == {related, unrelated}
    reply = chat.chat(OWNER, message=message, session_id=None, use_memory=True, top_k=4)
    assert [source.id for source in reply.sources] == [related]
    assert reply.sources[0].score >= CHAT_RELEVANCE_FLOOR
    prompt = "\n".join(m.content for m in model.prompts[-1])
    assert "lisbon" in prompt and "hunter2" not in prompt and MEMORY_PREAMBLE.split()[0] in prompt

    chat.chat(OWNER, message="what should I cook tonight?", session_id=None, use_memory=True, top_k=4)
    prompt = "\n".join(m.content for m in model.prompts[-1])
    assert "lisbon" not in prompt and "hunter2" not in prompt


def test_an_items_time_comes_from_its_id_and_a_passage_follows_its_document() -> None:
    document = f"{1_700_000_000_000:012x}" + "ab" * 10
    assert time_of(ItemRef("memory", document)) == 1_700_000_000_000.0
    assert time_of(ItemRef("passage", f"{document}#00003")) == 1_700_000_000_003.0
    assert time_of(ItemRef("passage", "not-a-time#00003")) == time_of(ItemRef("memory", "x")) == 0.0
