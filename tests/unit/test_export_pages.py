"""The account export, v2: every memory with its history, page by page behind an opaque cursor
(shared/API.md, POST /account), over in-memory stores; and the handler's JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

import handlers.memory
from handlers.memory import export_json
from pai_core.errors import InvalidInput
from pai_core.models import Turn
from pai_core.requests import ExportAccount, parse_account_command
from pai_core.services import AccountExport, AccountService, MemoryService
from pai_core.services.account import (
    MemoriesFrom,
    TurnsFrom,
    decode_export_cursor,
    encode_export_cursor,
)
from tests.fakes import (
    FakeContainer,
    FixedClock,
    HashingEmbedder,
    InMemoryConversationRepository,
    InMemoryMemoryRepository,
    fake_keyring,
)
from tests.unit.test_handlers import invoke, memory

EMPTY_PAGE_BYTES = len(json.dumps(export_json("alice", AccountExport(memories=[], turns=[], cursor="x" * 200))))


class World:
    def __init__(self, *, page_bytes: int = 1024 * 1024, page_memories: int = 200) -> None:
        self.clock = FixedClock()
        self.repository = InMemoryMemoryRepository()
        self.conversations = InMemoryConversationRepository()
        self.memories = MemoryService(self.repository, HashingEmbedder(), self.clock)
        self.account = AccountService(
            self.repository,
            self.conversations,
            fake_keyring(),
            page_bytes=page_bytes,
            page_memories=page_memories,
        )

    def remember(self, owner: str, text: str) -> str:
        self.clock.advance(seconds=1)
        return self.memories.remember(owner, content=text, category="general", metadata={}).id

    def say(self, owner: str, session: str, text: str) -> None:
        self.clock.advance(seconds=1)
        self.conversations.append(owner, session, Turn(role="user", content=text, at=self.clock.now()))

    def pages(self, owner: str) -> list[AccountExport]:
        pages = [self.account.export_page(owner, cursor=None)]
        while pages[-1].cursor is not None:
            assert len(pages) < 1000, "the export does not advance"
            pages.append(self.account.export_page(owner, cursor=pages[-1].cursor))
        return pages


def test_export_holds_every_version_of_an_updated_memory() -> None:
    world = World()
    kept = world.remember("alice", "I live in Lyon")
    world.clock.advance(minutes=1)
    world.memories.update("alice", kept, content="I live in Porto")
    plain = world.remember("alice", "Miso is my cat")

    export = world.account.export_page("alice", cursor=None)

    assert export.cursor is None
    assert [m.id for m in export.memories] == [plain, kept]  # newest first, as listed
    assert [v.content for v in export.histories[kept]] == ["I live in Lyon", "I live in Porto"]
    # A memory never updated has one version, itself: the same as its history says.
    assert export.histories[plain] == world.memories.history("alice", plain)
    assert export.histories[kept] == world.memories.history("alice", kept)


def test_pages_hold_everything_once_in_order_and_stay_within_their_bytes() -> None:
    world = World(page_bytes=4000)
    ids = [world.remember("alice", f"memory {i} " + "words " * 60) for i in range(25)]
    for i in range(3):
        world.memories.update("alice", ids[i * 7], content=f"memory {i * 7} changed " + "more " * 80)
    world.remember("bob", "bob's memory")
    for i in range(12):
        world.say("alice", f"s{i % 3}", f"turn {i} " + "chat " * 50)

    pages = world.pages("alice")

    assert len(pages) > 3
    assert [m.id for page in pages for m in page.memories] == sorted(ids, reverse=True)
    assert [t.content.split(" ")[1] for page in pages for _, t in page.turns] == [str(i) for i in range(12)]
    for page in pages:
        entries = len(page.memories) + len(page.turns)
        assert entries >= 1
        # What the page becomes as the API's JSON, less the keys every page has.
        shaped = len(json.dumps(export_json("alice", page), ensure_ascii=False).encode()) - EMPTY_PAGE_BYTES
        assert entries == 1 or shaped <= 4000, shaped
        assert set(page.histories) == {m.id for m in page.memories}
    assert max(len(json.dumps(export_json("alice", page))) for page in pages) > 2000  # pages are filled
    assert sum(len(page.histories[ids[7]]) for page in pages if ids[7] in page.histories) == 2


def test_a_page_holds_at_most_its_count_of_memories() -> None:
    world = World(page_memories=4)
    ids = [world.remember("alice", f"memory {i}") for i in range(10)]
    pages = world.pages("alice")
    assert [len(page.memories) for page in pages] == [4, 4, 2]
    assert [m.id for page in pages for m in page.memories] == ids[::-1]


def test_an_entry_larger_than_a_page_gets_a_page_of_its_own() -> None:
    world = World(page_bytes=100)
    ids = [world.remember("alice", "long " * 100) for _ in range(3)]
    world.say("alice", "s1", "hello " * 100)
    pages = world.pages("alice")
    assert [([m.id for m in p.memories], len(p.turns)) for p in pages] == [
        ([ids[2]], 0),
        ([ids[1]], 0),
        ([ids[0]], 0),
        ([], 1),
    ]


def test_deleting_or_adding_between_pages_skips_nothing_else() -> None:
    world = World(page_memories=3)
    ids = [world.remember("alice", f"memory {i}") for i in range(9)]
    first = world.account.export_page("alice", cursor=None)
    assert [m.id for m in first.memories] == ids[:5:-1]

    world.memories.forget("alice", ids[5])  # the next one to export
    world.memories.forget("alice", ids[7])  # exported already
    world.remember("alice", "stored while exporting")  # newer than the export's start: not in it

    rest = [first]
    while rest[-1].cursor is not None:
        rest.append(world.account.export_page("alice", cursor=rest[-1].cursor))
    assert [m.id for page in rest[1:] for m in page.memories] == [ids[4], ids[3], ids[2], ids[1], ids[0]]


def test_a_turn_expiring_between_pages_moves_nothing_else() -> None:
    world = World(page_bytes=300)
    for i in range(6):
        world.say("alice", "s1", f"turn {i} " + "x" * 200)
    first = world.account.export_page("alice", cursor=None)
    assert [t.content[:6] for _, t in first.turns] == ["turn 0"]
    del world.conversations.turns[("alice", "s1")][0:2]  # turn 0 (exported) and turn 1 (next) expire

    pages = [first]
    while pages[-1].cursor is not None:
        pages.append(world.account.export_page("alice", cursor=pages[-1].cursor))
    assert [t.content[:6] for page in pages[1:] for _, t in page.turns] == ["turn 2", "turn 3", "turn 4", "turn 5"]


def test_an_empty_account_is_one_empty_page() -> None:
    export = World().account.export_page("nobody", cursor=None)
    assert (export.memories, export.turns, export.histories, export.cursor) == ([], [], {}, None)


def test_the_whole_export_joins_the_pages() -> None:
    world = World(page_memories=2)
    ids = [world.remember("alice", f"memory {i}") for i in range(5)]
    world.say("alice", "s1", "hi")
    export = world.account.export("alice")
    assert [m.id for m in export.memories] == ids[::-1]
    assert set(export.histories) == set(ids)
    assert [t.content for _, t in export.turns] == ["hi"] and export.cursor is None


# -- cursors -----------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


MEMORY_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "position",
    [
        MemoriesFrom(page=None, after=MEMORY_ID),
        MemoriesFrom(page="eyJpZCI6IjAxIn0", after=None),
        MemoriesFrom(page="eyJpZCI6IjAxIn0", after=MEMORY_ID),
        TurnsFrom(after=None),
        TurnsFrom(after=(1_764_000_000_000_000, "s-1")),
    ],
)
def test_a_cursor_of_ours_reads_back_as_its_position(position: Any) -> None:
    assert decode_export_cursor(encode_export_cursor(position)) == position


FORGED = {
    "garbage": "not a cursor!",
    "not-base64": "%%%%",
    "not-json": b64(b"{"),
    "json-array": b64(b"[]"),
    "json-string": b64(b'"m"'),
    "unknown-keys": b64(b'{"x":1}'),
    "extra-key": b64(b'{"m":null,"a":null,"z":1}'),
    "half-memory": b64(b'{"m":null}'),
    "page-not-a-string": b64(b'{"m":5,"a":null}'),
    "page-empty": b64(b'{"m":"","a":null}'),
    "after-not-an-id": b64(b'{"m":null,"a":"abc"}'),
    "after-uppercase": b64(json.dumps({"m": None, "a": MEMORY_ID.upper()}, separators=(",", ":")).encode()),
    "turn-not-a-pair": b64(b'{"t":[1]}'),
    "turn-negative-time": b64(b'{"t":[-1,"s"]}'),
    "turn-time-bool": b64(b'{"t":[true,"s"]}'),
    "turn-time-float": b64(b'{"t":[1.5,"s"]}'),
    "turn-session-empty": b64(b'{"t":[1,""]}'),
    "turn-session-number": b64(b'{"t":[1,2]}'),
    "turn-and-memory": b64(b'{"t":null,"m":null,"a":null}'),
    "not-compact": b64(b'{"t": null}'),
    "padded": b64(b'{"t":null}') + "==",
    "standard-alphabet": base64.b64encode(b'{"t":[1,"s?>"]}').decode(),
    "duplicate-keys": b64(b'{"t":null,"t":null}'),
    "a-list-cursor": b64(b'{"id":"0123456789abcdef0123456789abcdef"}'),
}


@pytest.mark.parametrize("cursor", list(FORGED.values()), ids=list(FORGED))
def test_a_cursor_not_made_here_is_refused_naming_cursor(cursor: str) -> None:
    world = World()
    with pytest.raises(InvalidInput) as refused:
        world.account.export_page("alice", cursor=cursor)
    assert refused.value.field == "cursor"


def test_export_parses_its_cursor() -> None:
    assert parse_account_command({"action": "export"}) == ExportAccount(cursor=None)
    assert parse_account_command({"action": "export", "cursor": "abc"}) == ExportAccount(cursor="abc")
    for bad in (5, "", "x" * 2049):
        with pytest.raises(InvalidInput) as refused:
            parse_account_command({"action": "export", "cursor": bad})
        assert refused.value.field == "cursor"


# -- over HTTP ---------------------------------------------------------------------------------------

EXPORT_KEYS = {"userId", "memories", "documents", "conversations", "cursor"}


def account(body: Any) -> Any:
    return invoke(handlers.memory, "POST /account", body)


def test_export_json_has_every_memory_with_its_history_and_the_v2_keys(fake_container: FakeContainer) -> None:
    stored = memory({"action": "store", "content": "I live in Lyon", "metadata": {"k": 1}}).body
    fake_container.clock.advance(minutes=1)
    memory({"action": "update", "id": stored["id"], "content": "I live in Porto"})

    reply = account({"action": "export"})

    assert reply.status == 200, reply
    assert set(reply.body) == EXPORT_KEYS
    assert reply.body["documents"] == [] and reply.body["cursor"] is None
    (exported,) = reply.body["memories"]
    retrieved = memory({"action": "retrieve", "id": stored["id"]}).body
    assert {key: value for key, value in exported.items() if key != "history"} == retrieved
    assert exported["history"] == memory({"action": "history", "id": stored["id"]}).body["versions"]
    assert [v["content"] for v in exported["history"]] == ["I live in Lyon", "I live in Porto"]


def test_every_export_page_has_the_same_keys_and_the_cursor_walks_them(fake_container: FakeContainer) -> None:
    fake_container.account = AccountService(
        fake_container.memory_repository, fake_container.conversations, fake_keyring(), page_memories=2
    )
    ids = [memory({"action": "store", "content": f"note {i}"}).body["id"] for i in range(5)]

    seen: list[str] = []
    reply = account({"action": "export"})
    while True:
        assert reply.status == 200 and set(reply.body) == EXPORT_KEYS, reply
        seen += [m["id"] for m in reply.body["memories"]]
        if reply.body["cursor"] is None:
            break
        reply = account({"action": "export", "cursor": reply.body["cursor"]})
    assert seen == ids[::-1]


def test_a_forged_export_cursor_is_400_naming_cursor(fake_container: FakeContainer) -> None:
    reply = account({"action": "export", "cursor": FORGED["a-list-cursor"]})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "invalid_request" and reply.body["error"]["field"] == "cursor"


# -- the answers are what openapi.yaml describes -------------------------------------------------------


def spec_errors(schema_name: str, instance: Any) -> list[str]:
    components = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text("utf-8"))["components"]
    validator = OAS30Validator({"$ref": f"#/components/schemas/{schema_name}", "components": components})
    return [error.message for error in validator.iter_errors(instance)]


def test_v2_answers_and_requests_match_openapi(fake_container: FakeContainer) -> None:
    stored = memory({"action": "store_many", "items": [{"content": "Lyon"}, {"content": "Miso", "category": "pets"}]})
    assert spec_errors("MemoriesStored", stored.body) == []
    first = stored.body["items"][0]["id"]
    fake_container.clock.advance(seconds=1)
    updated = memory({"action": "update", "id": first, "content": "Porto"})
    assert spec_errors("Memory", updated.body) == []
    assert spec_errors("MemoryHistory", memory({"action": "history", "id": first}).body) == []
    assert spec_errors("MemoryPage", memory({"action": "list", "origin": "import"}).body) == []
    learned = fake_container.memories.remember(
        "local", content="likes tea", category="general", metadata={}, origin="learned", source_session="s-1"
    )
    assert spec_errors("Memory", memory({"action": "retrieve", "id": learned.id}).body) == []
    assert spec_errors("AccountExport", account({"action": "export"}).body) == []

    assert spec_errors("UpdateMemory", {"action": "update", "id": first, "category": "pets"}) == []
    assert spec_errors("UpdateMemory", {"action": "update", "id": first}) != []
    assert spec_errors("UpdateMemory", {"action": "update", "id": first, "content": None}) != []
    assert spec_errors("StoreManyMemories", {"action": "store_many", "items": []}) != []
