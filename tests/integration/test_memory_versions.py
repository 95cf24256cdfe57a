"""Memories that change, against a real emulator: update keeps the version it replaces sealed in the
memory's history, another container's warm index re-ranks the memory by its new content, listing by
origin, add_many, and delete and forget shredding the history too."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from pai_core.adapters.memory_codec import HISTORY_SUFFIX
from pai_core.bootstrap import Container
from pai_core.errors import Conflict
from pai_core.ids import MemoryIds
from pai_core.models import Memory, MemoryEdit
from pai_core.search import LiveMemoryIndex
from pai_local.stack import RunningStack
from tests.integration.support import find_plaintext

pytestmark = pytest.mark.integration


def new_owner() -> str:
    return f"ver-{secrets.token_hex(4)}"


def partition(aws: Callable[[str], Any], stack: RunningStack, name: str) -> list[dict[str, Any]]:
    return list(
        aws("dynamodb").query(
            TableName=stack.settings.knowledge_table,
            KeyConditionExpression="#o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": {"S": name}},
            ConsistentRead=True,
        )["Items"]
    )


def update(container: Container, owner: str, memory_id: str, text: str, reason: str) -> Memory:
    embedding = container.embedder.embed([text])[0]
    changed = container.memory_repository.update(
        owner, memory_id, MemoryEdit(content=text), embedding=embedding, reason=reason, at=container.clock.now()
    )
    assert changed is not None
    return changed


def test_an_update_re_ranks_in_another_warm_container(stack: RunningStack) -> None:
    owner = new_owner()
    writer, reader = Container(stack.settings), Container(stack.settings)
    assert isinstance(reader.search_index, LiveMemoryIndex)
    dentist = writer.memories.remember(
        owner, content="The dentist appointment is on Tuesday", category="c", metadata={}
    )
    writer.memories.remember(owner, content="The swimming pool closes at eight", category="c", metadata={})
    assert reader.memories.search(owner, "when is the dentist?", top=1)[0].memory.id == dentist.id
    update(writer, owner, dentist.id, "The yoga class moved to Friday evening", "the dentist was cancelled")

    hits = reader.memories.search(owner, "when is yoga?", top=1)
    assert hits[0].memory.id == dentist.id and hits[0].memory.content == "The yoga class moved to Friday evening"
    assert reader.search_index.events["catch_up"] >= 1 and reader.search_index.events["full_load"] == 1


def test_history_is_sealed_ordered_and_goes_with_the_memory(stack: RunningStack, aws: Callable[[str], Any]) -> None:
    owner = new_owner()
    app = Container(stack.settings)
    first = app.memories.remember(
        owner, content="Zanzibar-ferry leaves at nine", category="trip", metadata={"k": "Okapi-one"}
    )
    second = update(app, owner, first.id, "Zanzibar-ferry leaves at ten", "Quokka-timetable changed")
    third = app.memory_repository.update(
        owner,
        first.id,
        MemoryEdit(category="travel", metadata={"k": "Okapi-three"}),
        embedding=None,
        reason="Wombat-tidy up",
        at=app.clock.now() + timedelta(seconds=1),
    )
    assert third is not None and third.content == second.content and third.category == "travel"
    assert third.origin == "api" and third.updated_at is not None

    versions = app.memory_repository.history(owner, first.id)
    assert versions is not None
    assert [(v.content, v.category, v.metadata, v.reason) for v in versions] == [
        ("Zanzibar-ferry leaves at nine", "trip", {"k": "Okapi-one"}, None),
        ("Zanzibar-ferry leaves at ten", "trip", {"k": "Okapi-one"}, "Quokka-timetable changed"),
        ("Zanzibar-ferry leaves at ten", "travel", {"k": "Okapi-three"}, "Wombat-tidy up"),
    ]
    assert versions[0].valid_from == third.created_at and versions[-1].valid_to is None
    assert versions[-1].valid_from == third.updated_at
    assert third == app.memory_repository.get(owner, first.id)  # what update returns is what is stored
    assert all(v.valid_to == w.valid_from for v, w in itertools.pairwise(versions))
    assert app.memory_repository.all_histories(owner) == {first.id: versions}
    assert [m.id for m in app.memory_repository.all_memories(owner)] == [first.id]  # the current one only

    # No plaintext of any version, nor of a reason, anywhere in the table (and no vector in history).
    raw: list[dict[str, Any]] = []
    for page in aws("dynamodb").get_paginator("scan").paginate(TableName=stack.settings.knowledge_table):
        raw += page["Items"]
    assert find_plaintext(raw, ["Zanzibar", "Quokka", "Wombat", "Okapi"]) == []
    past = partition(aws, stack, owner + HISTORY_SUFFIX)
    assert len(past) == 2 and all("encryptedEmbedding" not in item for item in past)
    # Listing and the category index never show an earlier version.
    listed = app.memory_repository.page(owner, category=None, limit=100, cursor=None).items
    assert [m.id for m in listed] == [first.id]
    assert app.memory_repository.page(owner, category="trip", limit=100, cursor=None).items == []

    assert app.memory_repository.delete(owner, first.id)
    assert partition(aws, stack, owner + HISTORY_SUFFIX) == []
    assert app.memory_repository.history(owner, first.id) is None


def test_a_stale_update_is_a_conflict_and_changes_nothing(stack: RunningStack) -> None:
    owner = new_owner()
    app = Container(stack.settings)
    memory = app.memories.remember(owner, content="one", category="c", metadata={})
    repository = app.memory_repository
    real_get = repository._get_item
    stale = real_get(owner, memory.id)
    update(app, owner, memory.id, "two", "first")
    repository._get_item = lambda o, i: stale  # type: ignore[method-assign,assignment]
    with pytest.raises(Conflict):
        update(app, owner, memory.id, "three", "second, from an old read")
    repository._get_item = real_get  # type: ignore[method-assign]
    assert repository.get(owner, memory.id).content == "two"  # type: ignore[union-attr]
    assert [v.content for v in repository.history(owner, memory.id) or []] == ["one", "two"]


def test_an_update_of_a_memory_deleted_meanwhile_finds_nothing_and_leaves_nothing(
    stack: RunningStack, aws: Callable[[str], Any]
) -> None:
    owner = new_owner()
    app = Container(stack.settings)
    memory = app.memories.remember(owner, content="soon gone", category="c", metadata={})
    repository = app.memory_repository
    read_before_the_delete = repository._get_item(owner, memory.id)
    assert repository.delete(owner, memory.id)
    repository._get_item = lambda o, i: read_before_the_delete  # type: ignore[method-assign,assignment]
    embedding = app.embedder.embed(["still here?"])[0]
    edit = MemoryEdit(content="still here?")
    assert repository.update(owner, memory.id, edit, embedding=embedding, reason=None, at=app.clock.now()) is None
    assert partition(aws, stack, owner) == [] and partition(aws, stack, owner + HISTORY_SUFFIX) == []


def test_add_many_and_listing_by_origin(stack: RunningStack) -> None:
    owner = new_owner()
    app = Container(stack.settings)
    new_id, now = MemoryIds(), app.clock.now()
    imported = [
        Memory(id=new_id(now), content=f"imported {i}", category="books", metadata={}, created_at=now, origin="import")
        for i in range(7)
    ]
    vectors = app.embedder.embed([m.content for m in imported])
    stamp = app.change_log.change_stamp(owner)
    app.memory_repository.add_many(owner, list(zip(imported, vectors, strict=True)))
    assert app.change_log.change_stamp(owner).version == stamp.version + 1
    entries = list(app.change_log.changes_after(owner, ""))
    assert [e.ref.id for e in entries] == [m.id for m in imported] and {e.op for e in entries} == {"put"}
    typed = [app.memories.remember(owner, content=f"typed {i}", category="books", metadata={}).id for i in range(3)]

    def listed(origin: Any, category: str | None = None) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            page = app.memory_repository.page(owner, category=category, limit=2, cursor=cursor, origin=origin)
            assert len(page.items) <= 2
            ids += [m.id for m in page.items]
            cursor = page.cursor
            if cursor is None:
                return ids

    assert listed("import") == [m.id for m in reversed(imported)]
    assert listed("api") == list(reversed(typed))
    assert listed("import", "books") == [m.id for m in reversed(imported)]
    assert listed("learned") == []
    assert {m.origin for m in app.memory_repository.get_many(owner, typed).values()} == {"api"}
    hits = app.memories.search(owner, "imported", top=10)
    assert {hit.memory.id for hit in hits} >= {m.id for m in imported}
    assert np.isfinite([hit.score for hit in hits]).all()


def test_forget_shreds_every_version(stack: RunningStack, aws: Callable[[str], Any]) -> None:
    owner = new_owner()
    app = Container(stack.settings)
    memory = app.memories.remember(owner, content="old wording", category="c", metadata={})
    update(app, owner, memory.id, "new wording", "reworded")
    assert partition(aws, stack, owner + HISTORY_SUFFIX)
    app.account.forget(owner)
    assert partition(aws, stack, owner) == []
    assert partition(aws, stack, owner + HISTORY_SUFFIX) == []
    assert [item["id"]["S"] for item in partition(aws, stack, owner + "#changes")] == ["head"]
