"""v2 memories over HTTP against the emulator (shared/API.md, POST /memory and POST /account):
store_many, update, history, list by origin, and the export with histories, page by page."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pai_core.bootstrap import Container
from pai_core.services import AccountService
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient

pytestmark = pytest.mark.integration

UPDATE_REASON = "updated through the API"


def new_user(api: ApiClient, stack: RunningStack) -> ApiClient:
    """The gateway as a user of its own, so that listings and exports hold only this test's memories."""
    user = f"v2-{uuid.uuid4().hex[:12]}"
    return api.with_key(stack.container.api_keys.issue(user, "memory v2 test").key)


def test_store_many_stores_every_item_as_an_import_in_request_order(api: ApiClient, stack: RunningStack) -> None:
    me = new_user(api, stack)
    items: list[dict[str, Any]] = [{"content": f"imported note {i}"} for i in range(12)]
    items[3] = {"content": "with a category", "category": "pets", "metadata": {"tags": ["a"]}}

    stored = me.post("/memory", {"action": "store_many", "items": items})

    assert stored.status == 201, stored
    assert [set(item) for item in stored.json["items"]] == [{"id", "category", "createdAt"}] * 12
    assert stored.json["items"][3]["category"] == "pets"
    ids = [item["id"] for item in stored.json["items"]]
    assert len(set(ids)) == 12
    for item, memory_id in zip(items, ids, strict=True):
        got = me.post("/memory", {"action": "retrieve", "id": memory_id})
        assert got.status == 200, got
        assert got.json["content"] == item["content"] and got.json["origin"] == "import"
        assert got.json["metadata"] == item.get("metadata", {})
        assert got.json["updatedAt"] == got.json["createdAt"]

    typed = me.post("/memory", {"action": "store", "content": "typed by hand"})
    imports = me.post("/memory", {"action": "list", "origin": "import", "limit": 100})
    assert imports.status == 200, imports
    assert sorted(m["id"] for m in imports.json["items"]) == sorted(ids)
    by_hand = me.post("/memory", {"action": "list", "origin": "api"}).json["items"]
    assert [m["id"] for m in by_hand] == [typed.json["id"]]
    assert me.post("/memory", {"action": "list", "origin": "learned"}).json == {"items": [], "cursor": None}

    found = me.post("/search", {"query": "with a category", "topK": 1}).json["results"]
    assert [r["id"] for r in found] == [ids[3]]


def test_store_many_with_one_bad_item_stores_nothing(api: ApiClient, stack: RunningStack) -> None:
    me = new_user(api, stack)
    items: list[Any] = [{"content": f"note {i}"} for i in range(6)]
    items[4] = {"content": "x", "category": "Not A Category"}

    refused = me.post("/memory", {"action": "store_many", "items": items})

    assert refused.status == 400, refused
    assert refused.json["error"]["field"] == "items[4].category"
    assert me.post("/memory", {"action": "list"}).json == {"items": [], "cursor": None}
    too_many = me.post("/memory", {"action": "store_many", "items": [{"content": "x"}] * 101})
    assert too_many.status == 400 and too_many.json["error"]["field"] == "items"


def test_update_keeps_the_old_version_and_search_ranks_the_new_content_at_once(
    api: ApiClient, stack: RunningStack
) -> None:
    me = new_user(api, stack)
    stored = me.post("/memory", {"action": "store", "content": "my cat is called Miso", "category": "pets"})
    me.post("/memory", {"action": "store", "content": "the wifi password is on the fridge"})
    assert (
        me.post("/search", {"query": "what is my cat called?", "topK": 1}).json["results"][0]["id"]
        == (stored.json["id"])
    )

    updated = me.post(
        "/memory",
        {"action": "update", "id": stored.json["id"], "content": "my dog is called Rex", "metadata": {"v": 2}},
    )

    assert updated.status == 200, updated
    assert updated.json["content"] == "my dog is called Rex" and updated.json["metadata"] == {"v": 2}
    assert updated.json["category"] == "pets" and updated.json["origin"] == "api"
    assert updated.json["createdAt"] == stored.json["createdAt"] < updated.json["updatedAt"]
    assert me.post("/memory", {"action": "retrieve", "id": stored.json["id"]}).json == updated.json
    hit = me.post("/search", {"query": "what is my dog called?", "topK": 1}).json["results"][0]
    assert (hit["id"], hit["content"]) == (stored.json["id"], "my dog is called Rex")

    history = me.post("/memory", {"action": "history", "id": stored.json["id"]})
    assert history.status == 200, history
    versions = history.json["versions"]
    assert [(v["content"], v["metadata"], v["reason"]) for v in versions] == [
        ("my cat is called Miso", {}, None),
        ("my dog is called Rex", {"v": 2}, UPDATE_REASON),
    ]
    assert versions[0]["validFrom"] == stored.json["createdAt"]
    assert versions[0]["validTo"] == versions[1]["validFrom"] == updated.json["updatedAt"]
    assert versions[1]["validTo"] is None


def test_a_category_change_refiles_the_memory_for_search(api: ApiClient, stack: RunningStack) -> None:
    me = new_user(api, stack)
    stored = me.post("/memory", {"action": "store", "content": "Miso sleeps in the sun", "category": "general"})
    assert me.post("/memory", {"action": "update", "id": stored.json["id"], "category": "pets"}).status == 200
    in_pets = me.post("/search", {"query": "Miso", "category": "pets"}).json["results"]
    in_general = me.post("/search", {"query": "Miso", "category": "general"}).json["results"]
    assert [r["id"] for r in in_pets] == [stored.json["id"]] and in_general == []


def test_update_and_history_of_unknown_deleted_or_others_memories_are_404(api: ApiClient, stack: RunningStack) -> None:
    me, them = new_user(api, stack), new_user(api, stack)
    theirs = them.post("/memory", {"action": "store", "content": "their note"}).json["id"]
    gone = me.post("/memory", {"action": "store", "content": "soon deleted"}).json["id"]
    assert me.post("/memory", {"action": "delete", "id": gone}).status == 200
    for memory_id in ("0" * 32, gone, theirs):
        for body in ({"action": "update", "content": "x"}, {"action": "history"}):
            reply = me.post("/memory", {**body, "id": memory_id})
            assert reply.status == 404 and reply.json["error"]["code"] == "not_found", (body, reply)
    assert them.post("/memory", {"action": "retrieve", "id": theirs}).json["content"] == "their note"
    assert me.post("/memory", {"action": "update", "id": gone}).status == 400  # nothing to change


def test_export_pages_hold_every_memory_with_its_history_then_the_turns(
    api: ApiClient, stack: RunningStack, installed: Callable[[Container], None]
) -> None:
    # Pages of two memories: a handful of memories then spans several pages.
    small_pages = Container(stack.settings, chat_model=stack.container.chat_model)
    small_pages.embedder = stack.container.embedder  # share the loaded model
    small_pages.account = AccountService(  # type: ignore[misc]
        small_pages.memory_repository,
        small_pages.conversation_repository,
        small_pages.keyring,
        page_memories=2,
    )
    installed(small_pages)
    me = new_user(api, stack)
    ids = [
        item["id"]
        for item in me.post(
            "/memory", {"action": "store_many", "items": [{"content": f"exported note {i}"} for i in range(5)]}
        ).json["items"]
    ]
    assert me.post("/memory", {"action": "update", "id": ids[1], "content": "exported note 1, changed"}).status == 200
    assert me.post("/chat", {"message": "hello", "sessionId": "export-s1", "useMemory": False}).status == 200

    pages = [me.post("/account", {"action": "export"})]
    while pages[-1].status == 200 and pages[-1].json["cursor"] is not None:
        assert len(pages) < 20, "the export does not advance"
        pages.append(me.post("/account", {"action": "export", "cursor": pages[-1].json["cursor"]}))

    assert all(page.status == 200 for page in pages), pages
    assert all(set(page.json) == {"userId", "memories", "documents", "conversations", "cursor"} for page in pages)
    assert len(pages) >= 3
    memories = [m for page in pages for m in page.json["memories"]]
    assert [m["id"] for m in memories] == ids[::-1]
    changed = next(m for m in memories if m["id"] == ids[1])
    assert [v["content"] for v in changed["history"]] == ["exported note 1", "exported note 1, changed"]
    assert changed["history"] == me.post("/memory", {"action": "history", "id": ids[1]}).json["versions"]
    assert all(len(m["history"]) == 1 for m in memories if m["id"] != ids[1])
    turns = [t for page in pages for t in page.json["conversations"]]
    assert [(t["sessionId"], t["role"]) for t in turns] == [("export-s1", "user"), ("export-s1", "assistant")]
    assert all(page.json["documents"] == [] for page in pages)

    forged = me.post("/account", {"action": "export", "cursor": pages[0].json["cursor"] + "A"})
    assert forged.status == 400 and forged.json["error"]["field"] == "cursor"
    list_cursor = me.post("/memory", {"action": "list", "limit": 1}).json["cursor"]
    mixed = me.post("/account", {"action": "export", "cursor": list_cursor})
    assert mixed.status == 400 and mixed.json["error"]["field"] == "cursor"
