"""v2 memories: store_many, update, history, list by origin (shared/API.md, POST /memory): parsing,
the use cases over in-memory fakes, and the handler's answers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pai_core.errors import InvalidInput, NotFound
from pai_core.requests import (
    MAX_CONTENT_CHARS,
    MAX_METADATA_BYTES,
    MAX_STORE_MANY_ITEMS,
    ListMemories,
    MemoryHistory,
    StoreManyMemories,
    StoreMemory,
    UpdateMemory,
    parse_memory_command,
)
from pai_core.services import MemoryService
from pai_core.services.memories import API_UPDATE_REASON
from tests.fakes import FakeContainer, FixedClock, HashingEmbedder, InMemoryMemoryRepository
from tests.unit.test_handlers import memory, search

# -- parsing ---------------------------------------------------------------------------------------


def field_of(body: dict[str, Any]) -> str | None:
    with pytest.raises(InvalidInput) as refused:
        parse_memory_command(body)
    return refused.value.field


def items(count: int) -> list[dict[str, Any]]:
    return [{"content": f"note {i}"} for i in range(count)]


def test_store_many_parses_every_item_with_stores_defaults() -> None:
    command = parse_memory_command(
        {
            "action": "store_many",
            "items": [
                {"content": "a"},
                {"content": "b", "category": "pets", "metadata": {"k": 1}, "unknown": "ignored"},
                {"content": "c", "category": None, "metadata": None},
            ],
        }
    )
    assert command == StoreManyMemories(
        items=(
            StoreMemory(content="a", category="general", metadata={}),
            StoreMemory(content="b", category="pets", metadata={"k": 1}),
            StoreMemory(content="c", category="general", metadata={}),
        )
    )


@pytest.mark.parametrize(
    ("bad_items", "field"),
    [
        pytest.param([*items(3), {"category": "pets"}], "items[3].content", id="content-missing"),
        pytest.param([{"content": ""}], "items[0].content", id="content-empty"),
        pytest.param([*items(1), {"content": 5}], "items[1].content", id="content-not-a-string"),
        pytest.param([{"content": "x" * (MAX_CONTENT_CHARS + 1)}], "items[0].content", id="content-too-long"),
        pytest.param([*items(2), {"content": "x", "category": "Pets!"}], "items[2].category", id="category-pattern"),
        pytest.param([{"content": "x", "metadata": [1]}], "items[0].metadata", id="metadata-not-an-object"),
        pytest.param(
            [*items(4), {"content": "x", "metadata": {"k": "v" * MAX_METADATA_BYTES}}],
            "items[4].metadata",
            id="metadata-too-big",
        ),
        pytest.param([*items(1), "just text"], "items[1]", id="item-not-an-object"),
        pytest.param([*items(1), None], "items[1]", id="item-null"),
        pytest.param([], "items", id="empty"),
        pytest.param(items(MAX_STORE_MANY_ITEMS + 1), "items", id="101-items"),
        pytest.param({"content": "x"}, "items", id="an-object-not-an-array"),
        pytest.param(None, "items", id="missing"),
    ],
)
def test_store_many_refusals_name_the_field_by_its_path(bad_items: Any, field: str) -> None:
    assert field_of({"action": "store_many", "items": bad_items}) == field


def test_store_many_takes_up_to_100_items() -> None:
    command = parse_memory_command({"action": "store_many", "items": items(MAX_STORE_MANY_ITEMS)})
    assert isinstance(command, StoreManyMemories)
    assert [item.content for item in command.items] == [f"note {i}" for i in range(MAX_STORE_MANY_ITEMS)]


def test_store_many_names_the_first_invalid_item() -> None:
    bad = items(10)
    bad[7] = {"content": ""}
    bad[8] = {"content": 1}
    assert field_of({"action": "store_many", "items": bad}) == "items[7].content"


def test_update_parses_what_it_changes_and_leaves_the_rest_none() -> None:
    assert parse_memory_command({"action": "update", "id": "m1", "content": "new"}) == UpdateMemory(
        id="m1", content="new", category=None, metadata=None
    )
    assert parse_memory_command(
        {"action": "update", "id": "m1", "category": "pets", "metadata": {}, "content": None, "extra": 1}
    ) == UpdateMemory(id="m1", content=None, category="pets", metadata={})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"action": "update", "id": "m1"}, id="nothing"),
        pytest.param({"action": "update", "id": "m1", "content": None, "metadata": None}, id="only-nulls"),
        pytest.param({"action": "update", "id": "m1", "reason": "why not"}, id="only-unknown-fields"),
    ],
)
def test_update_needs_at_least_one_of_content_category_metadata(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_memory_command(body)
    assert refused.value.code == "invalid_request"
    assert "content, category, metadata" in refused.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"content": "x"}, "id", id="id-missing"),
        pytest.param({"id": "", "content": "x"}, "id", id="id-empty"),
        pytest.param({"id": "x" * 129, "content": "x"}, "id", id="id-too-long"),
        pytest.param({"id": "m1", "content": ""}, "content", id="content-empty"),
        pytest.param({"id": "m1", "content": "x" * (MAX_CONTENT_CHARS + 1)}, "content", id="content-too-long"),
        pytest.param({"id": "m1", "category": "UPPER"}, "category", id="category-pattern"),
        pytest.param({"id": "m1", "metadata": "text"}, "metadata", id="metadata-not-an-object"),
        pytest.param({"id": "m1", "metadata": {"k": "v" * MAX_METADATA_BYTES}}, "metadata", id="metadata-too-big"),
    ],
)
def test_update_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert field_of({"action": "update", **body}) == field


def test_history_needs_an_id() -> None:
    assert parse_memory_command({"action": "history", "id": "m1"}) == MemoryHistory(id="m1")
    assert field_of({"action": "history"}) == "id"
    assert field_of({"action": "history", "id": 7}) == "id"


@pytest.mark.parametrize("origin", ["api", "learned", "import"])
def test_list_takes_an_origin(origin: str) -> None:
    command = parse_memory_command({"action": "list", "origin": origin})
    assert command == ListMemories(category=None, limit=20, cursor=None, origin=origin)  # type: ignore[arg-type]


@pytest.mark.parametrize("origin", ["API", "chat", "", 1, ["api"]])
def test_list_refuses_an_unknown_origin(origin: Any) -> None:
    assert field_of({"action": "list", "origin": origin}) == "origin"


def test_unknown_action_names_the_new_actions() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_memory_command({"action": "upsert"})
    assert refused.value.code == "unknown_action" and refused.value.field == "action"
    for action in ("store_many", "update", "history"):
        assert action in refused.value.message


# -- the use cases ---------------------------------------------------------------------------------


class RecordingIndex:
    """The search index port, keeping what the service tells it: each memory's category and vector.

    It speaks both shapes of the port (`added(MemoryVector)`/`removed(id)`, and `put(IndexedItem)`/
    `removed(ItemRef)` of the retrieval core), so these tests hold the service to what ends up in
    the index rather than to the calls it makes."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, bytes]] = {}  # memory id -> (category, vector)
        self.calls = 0

    def search(self, owner: str, query: Any, **options: Any) -> list[Any]:
        return []

    def added(self, owner: str, vector: Any) -> None:
        self.calls += 1
        self.held[vector.id] = (vector.category, vector.vector)

    def put(self, owner: str, item: Any) -> None:
        self.calls += 1
        self.held[item.ref.id] = (item.category, item.vector)

    def removed(self, owner: str, memory: Any) -> None:
        self.calls += 1
        self.held.pop(getattr(memory, "id", memory), None)


class World:
    def __init__(self) -> None:
        self.clock = FixedClock()
        self.embedder = HashingEmbedder()
        self.repository = InMemoryMemoryRepository()
        self.index = RecordingIndex()
        self.service = MemoryService(self.repository, self.embedder, self.clock, index=self.index)
        self.plain = MemoryService(self.repository, self.embedder, self.clock)  # searches by reading every vector


@pytest.fixture
def world() -> World:
    return World()


def vector_of(embedder: HashingEmbedder, text: str) -> bytes:
    return np.asarray(embedder.embed([text])[0], dtype="<f4").tobytes()


def test_remember_records_origin_api(world: World) -> None:
    stored = world.service.remember("alice", content="Miso is my cat", category="pets", metadata={})
    assert stored.origin == "api" and stored.updated_at is None
    assert world.repository.get("alice", stored.id) == stored


def test_remember_many_embeds_once_stores_all_as_imports_in_request_order(world: World) -> None:
    contents = [f"imported note number {i}" for i in range(30)]
    stored = world.service.remember_many(
        "alice", [StoreMemory(content=c, category="notes", metadata={"i": i}) for i, c in enumerate(contents)]
    )

    assert world.embedder.calls == 1
    assert [m.content for m in stored] == contents
    assert [m.metadata for m in stored] == [{"i": i} for i in range(30)]
    assert all(m.origin == "import" and m.created_at == world.clock.now() for m in stored)
    assert [m.id for m in stored] == sorted(m.id for m in stored)  # ids sort in request order
    assert len({m.id for m in stored}) == 30
    assert [world.repository.get("alice", m.id) for m in stored] == stored
    assert set(world.index.held) == {m.id for m in stored}
    assert world.index.held[stored[4].id] == ("notes", vector_of(world.embedder, contents[4]))


def test_remember_many_stores_nothing_when_embedding_fails(world: World) -> None:
    world.embedder.fail_with = RuntimeError("model broke")
    with pytest.raises(RuntimeError):
        world.service.remember_many("alice", [StoreMemory(content="a", category="general", metadata={})])
    assert world.repository.items == {} and world.index.calls == 0


def test_update_of_the_content_embeds_it_keeps_the_old_version_and_reindexes(world: World) -> None:
    first = world.service.remember("alice", content="I live in Lyon", category="home", metadata={"k": 1})
    created = world.clock.now()
    world.clock.advance(minutes=5)
    calls_before = world.embedder.calls

    updated = world.service.update("alice", first.id, content="I live in Porto")

    assert world.embedder.calls == calls_before + 1
    assert updated.id == first.id and updated.content == "I live in Porto"
    assert (updated.category, updated.metadata, updated.origin) == ("home", {"k": 1}, "api")
    assert updated.created_at == created and updated.updated_at == world.clock.now()
    assert world.repository.get("alice", first.id) == updated
    assert world.index.held == {first.id: ("home", vector_of(world.embedder, "I live in Porto"))}

    versions = world.service.history("alice", first.id)
    assert [(v.content, v.reason) for v in versions] == [
        ("I live in Lyon", None),
        ("I live in Porto", API_UPDATE_REASON),
    ]
    assert versions[0].valid_from == created and versions[0].valid_to == versions[1].valid_from == world.clock.now()
    assert versions[1].valid_to is None


def test_search_ranks_an_updated_memory_by_its_new_content(world: World) -> None:
    cat = world.plain.remember("alice", content="my cat is called Miso", category="general", metadata={})
    world.plain.remember("alice", content="the wifi password is on the fridge", category="general", metadata={})
    world.plain.update("alice", cat.id, content="my dog is called Rex")

    hits = world.plain.search("alice", "what is my dog called", top=1)
    assert [(hit.memory.id, hit.memory.content) for hit in hits] == [(cat.id, "my dog is called Rex")]


def test_update_of_metadata_alone_embeds_nothing_and_leaves_the_index(world: World) -> None:
    first = world.service.remember("alice", content="Miso is my cat", category="pets", metadata={"a": 1})
    index_calls, embedder_calls = world.index.calls, world.embedder.calls
    world.clock.advance(seconds=1)

    updated = world.service.update("alice", first.id, metadata={"a": 2})

    assert updated.metadata == {"a": 2} and updated.content == "Miso is my cat"
    assert world.embedder.calls == embedder_calls
    assert world.index.calls == index_calls
    assert len(world.service.history("alice", first.id)) == 2


def test_a_category_change_refiles_the_memory_for_search(world: World) -> None:
    first = world.plain.remember("alice", content="Miso is my cat", category="general", metadata={})
    world.clock.advance(seconds=1)

    updated = world.plain.update("alice", first.id, category="pets")

    assert updated.category == "pets" and updated.content == "Miso is my cat"
    assert [hit.memory.id for hit in world.plain.search("alice", "Miso", top=5, category="pets")] == [first.id]
    assert world.plain.search("alice", "Miso", top=5, category="general") == []


def test_an_update_that_changes_nothing_stores_nothing(world: World) -> None:
    first = world.service.remember("alice", content="Miso", category="pets", metadata={"n": 1})
    calls_before = world.embedder.calls
    world.clock.advance(seconds=1)

    same = world.service.update("alice", first.id, content="Miso", category="pets", metadata={"n": 1})

    assert same == first and same.updated_at is None
    assert world.embedder.calls == calls_before
    assert len(world.service.history("alice", first.id)) == 1


def test_metadata_that_only_python_finds_equal_is_a_change(world: World) -> None:
    first = world.service.remember("alice", content="Miso", category="pets", metadata={"flag": 1})
    world.clock.advance(seconds=1)
    assert world.service.update("alice", first.id, metadata={"flag": True}).metadata == {"flag": True}


def test_update_of_an_unknown_or_someone_elses_memory_is_not_found_before_embedding(world: World) -> None:
    bobs = world.service.remember("bob", content="bob's note", category="general", metadata={})
    calls_before = world.embedder.calls
    for owner, memory_id in (("alice", "0" * 32), ("alice", bobs.id)):
        with pytest.raises(NotFound):
            world.service.update(owner, memory_id, content="x" * 1000)
    assert world.embedder.calls == calls_before
    assert world.repository.get("bob", bobs.id) == bobs


def test_history_of_an_unknown_or_deleted_memory_is_not_found(world: World) -> None:
    gone = world.service.remember("alice", content="soon gone", category="general", metadata={})
    world.service.forget("alice", gone.id)
    for memory_id in ("0" * 32, gone.id):
        with pytest.raises(NotFound):
            world.service.history("alice", memory_id)
    with pytest.raises(NotFound):
        world.service.history("bob", gone.id)


def test_list_filters_by_origin(world: World) -> None:
    mine = world.service.remember("alice", content="typed", category="general", metadata={})
    imported = world.service.remember_many(
        "alice", [StoreMemory(content=f"imported {i}", category="general", metadata={}) for i in range(3)]
    )
    learned = world.service.remember(
        "alice", content="likes tea", category="general", metadata={}, origin="learned", source_session="s1"
    )

    def listed(origin: Any) -> list[str]:
        page = world.service.list_memories("alice", category=None, limit=20, cursor=None, origin=origin)
        return [m.id for m in page.items]

    assert listed("api") == [mine.id]
    assert listed("import") == sorted((m.id for m in imported), reverse=True)
    assert listed("learned") == [learned.id]
    assert len(listed(None)) == 5


# -- over HTTP (the handler, with the fake composition root) ----------------------------------------

MEMORY_KEYS = {"id", "content", "category", "metadata", "createdAt", "updatedAt", "origin"}


def test_store_many_answers_201_with_each_item_in_request_order(fake_container: FakeContainer) -> None:
    reply = memory({"action": "store_many", "items": [{"content": "first"}, {"content": "second", "category": "pets"}]})
    assert reply.status == 201, reply
    assert set(reply.body) == {"items"}
    assert [set(item) for item in reply.body["items"]] == [{"id", "category", "createdAt"}] * 2
    assert [item["category"] for item in reply.body["items"]] == ["general", "pets"]
    contents = [memory({"action": "retrieve", "id": item["id"]}).body for item in reply.body["items"]]
    assert [(m["content"], m["origin"]) for m in contents] == [("first", "import"), ("second", "import")]


def test_store_many_with_one_bad_item_stores_nothing(fake_container: FakeContainer) -> None:
    body = {"action": "store_many", "items": [*items(5), {"content": "ok", "metadata": "not an object"}, *items(3)]}
    reply = memory(body)
    assert reply.status == 400
    assert reply.body["error"]["field"] == "items[5].metadata"
    assert fake_container.memory_repository.items == {}
    assert fake_container.embedder.calls == 0


def test_update_answers_200_with_the_memory_and_history_with_every_version(fake_container: FakeContainer) -> None:
    stored = memory({"action": "store", "content": "I live in Lyon", "category": "home"}).body
    fake_container.clock.advance(minutes=1)

    updated = memory({"action": "update", "id": stored["id"], "content": "I live in Porto", "metadata": {"v": 2}})
    assert updated.status == 200, updated
    assert set(updated.body) == MEMORY_KEYS
    assert updated.body["content"] == "I live in Porto" and updated.body["metadata"] == {"v": 2}
    assert updated.body["createdAt"] == stored["createdAt"] != updated.body["updatedAt"]
    assert updated.body["origin"] == "api" and updated.body["category"] == "home"
    assert memory({"action": "retrieve", "id": stored["id"]}).body == updated.body

    history = memory({"action": "history", "id": stored["id"]})
    assert history.status == 200, history
    assert history.body["id"] == stored["id"]
    versions = history.body["versions"]
    assert [set(v) for v in versions] == [{"content", "category", "metadata", "validFrom", "validTo", "reason"}] * 2
    assert [(v["content"], v["metadata"], v["reason"]) for v in versions] == [
        ("I live in Lyon", {}, None),
        ("I live in Porto", {"v": 2}, API_UPDATE_REASON),
    ]
    assert versions[0]["validFrom"] == stored["createdAt"]
    assert versions[0]["validTo"] == versions[1]["validFrom"] == updated.body["updatedAt"]
    assert versions[1]["validTo"] is None


def test_search_finds_an_updated_memory_by_its_new_words(fake_container: FakeContainer) -> None:
    stored = memory({"action": "store", "content": "my cat is called Miso"}).body
    memory({"action": "store", "content": "the wifi password is on the fridge"})
    assert memory({"action": "update", "id": stored["id"], "content": "my dog is called Rex"}).status == 200
    results = search({"query": "dog called Rex", "topK": 1}).body["results"]
    assert [(r["id"], r["content"]) for r in results] == [(stored["id"], "my dog is called Rex")]


@pytest.mark.parametrize("action", ["update", "history"])
def test_update_and_history_of_an_unknown_id_are_404(fake_container: FakeContainer, action: str) -> None:
    reply = memory({"action": action, "id": "0" * 32, "content": "x"})
    assert reply.status == 404 and reply.body["error"]["code"] == "not_found"


def test_update_with_nothing_to_change_is_400(fake_container: FakeContainer) -> None:
    stored = memory({"action": "store", "content": "Miso"}).body
    reply = memory({"action": "update", "id": stored["id"]})
    assert reply.status == 400 and reply.body["error"]["code"] == "invalid_request"


def test_list_by_origin_over_http(fake_container: FakeContainer) -> None:
    memory({"action": "store", "content": "typed"})
    memory({"action": "store_many", "items": items(2)})
    imported = memory({"action": "list", "origin": "import"})
    assert imported.status == 200
    assert [m["content"] for m in imported.body["items"]] == ["note 1", "note 0"]
    assert [m["content"] for m in memory({"action": "list", "origin": "api"}).body["items"]] == ["typed"]
    assert memory({"action": "list", "origin": "learned"}).body == {"items": [], "cursor": None}
    refused = memory({"action": "list", "origin": "robot"})
    assert refused.status == 400 and refused.body["error"]["field"] == "origin"


def test_a_learned_memory_carries_its_session(fake_container: FakeContainer) -> None:
    learned = fake_container.memories.remember(
        "local", content="likes tea", category="general", metadata={}, origin="learned", source_session="s-42"
    )
    reply = memory({"action": "retrieve", "id": learned.id})
    assert reply.body["origin"] == "learned"
    assert reply.body["source"] == {"sessionId": "s-42"}
    assert set(reply.body) == {*MEMORY_KEYS, "source"}


def test_a_store_many_body_over_256_kib_is_413_and_stores_nothing(fake_container: FakeContainer) -> None:
    body = {"action": "store_many", "items": [{"content": "x" * 2700} for _ in range(100)]}
    assert len(json.dumps(body)) > 256 * 1024
    reply = memory(body)
    assert reply.status == 413
    assert fake_container.memory_repository.items == {}
