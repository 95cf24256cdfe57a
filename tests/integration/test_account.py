"""A user's export and "forget me" against the emulator: every table item, every S3 object version
and the key material of the user goes; nobody else's does."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pai_core.adapters.dynamodb_changelog import HEAD_ID
from pai_core.adapters.dynamodb_keystore import RETIRED
from pai_core.bootstrap import Container
from pai_core.crypto import KeyMaterialDestroyed, RecordContext
from pai_core.models import Turn
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient, run_script

pytestmark = pytest.mark.integration


def new_user() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def fill(container: Container, user: str, memories: int = 3) -> list[str]:
    ids = [
        container.memories.remember(user, content=f"{user} secret {i}", category="general", metadata={"i": i}).id
        for i in range(memories)
    ]
    turn_repo = container.conversation_repository
    turn_repo.append(user, "s1", Turn(role="user", content=f"{user} said hello", at=datetime.now(UTC)))
    turn_repo.append(user, "s2", Turn(role="assistant", content=f"{user} heard back", at=datetime.now(UTC)))
    snapshots = container.snapshot_store
    assert snapshots is not None
    snapshots.save(user, b"first snapshot")
    snapshots.save(user, b"second snapshot")  # two versions in the versioned bucket
    return ids


def bare_head(item: dict[str, Any]) -> bool:
    """The owner's head stays after a forget (its generation tells other containers), holding two
    counters and nothing of the user's."""
    return item.get("id", {}).get("S") == HEAD_ID and set(item) <= {"owner", "id", "version", "generation"}


def bare_retired(item: dict[str, Any]) -> bool:
    """The key store's marker of how far the user's destroyed key versions went (so that none is
    ever reused) stays too, holding a number and nothing of the user's."""
    return item.get("version", {}).get("S") == RETIRED and set(item) <= {"owner", "version", "retiredThrough"}


def items_of(aws: Callable[[str], Any], stack: RunningStack, user: str) -> dict[str, int]:
    dynamodb = aws("dynamodb")
    counts: dict[str, int] = {}
    for table in (stack.settings.knowledge_table, stack.settings.conversations_table, stack.settings.keystore_table):
        items: list[dict[str, Any]] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            items += page["Items"]
        counts[table] = sum(
            1
            for item in items
            if item.get("owner", {}).get("S", "").split("#")[0] == user
            and not bare_head(item)
            and not bare_retired(item)
        )
    s3 = aws("s3")
    versions = s3.list_object_versions(Bucket=stack.resources.bucket, Prefix=f"index/{user}.snapshot")
    counts["s3"] = len(versions.get("Versions", [])) + len(versions.get("DeleteMarkers", []))
    return counts


def test_forget_removes_every_item_version_and_key_of_the_user_only(
    stack: RunningStack, aws: Callable[[str], Any]
) -> None:
    container = Container(stack.settings)
    doomed, kept = new_user(), new_user()
    fill(container, doomed)
    fill(container, kept)
    sealed_elsewhere = container.cipher.encrypt(
        b"a copy of the memory in a backup",
        RecordContext(partition={"table": "backup", "owner": doomed}, record={"id": "1"}),
    )
    before = items_of(aws, stack, doomed)
    assert all(count > 0 for count in before.values()), before

    report = container.account.forget(doomed)

    assert (report.memories, report.conversation_turns, report.snapshot_versions) == (3, 2, 2)
    assert items_of(aws, stack, doomed) == dict.fromkeys(before, 0)
    assert all(count > 0 for count in items_of(aws, stack, kept).values())
    with pytest.raises(KeyMaterialDestroyed):
        Container(stack.settings).cipher.decrypt(
            sealed_elsewhere, RecordContext(partition={"table": "backup", "owner": doomed}, record={"id": "1"})
        )


def test_the_admin_script_exports_rotates_and_forgets(stack: RunningStack, tmp_path: Path) -> None:
    user = new_user()
    ids = fill(Container(stack.settings), user)
    common = ["--user", user, "--region", stack.settings.region, "--bucket", stack.resources.bucket]
    out = tmp_path / "export.json"

    exported_run = run_script(stack, "users.py", "export", *common, "--out", str(out))
    assert exported_run.returncode == 0, exported_run.stderr
    exported = json.loads(out.read_text())
    assert out.stat().st_mode & 0o077 == 0  # for the user alone
    assert sorted(m["id"] for m in exported["memories"]) == sorted(ids)
    assert {m["content"] for m in exported["memories"]} == {f"{user} secret {i}" for i in range(3)}
    assert [(t["sessionId"], t["content"]) for t in exported["conversations"]] == [
        ("s1", f"{user} said hello"),
        ("s2", f"{user} heard back"),
    ]

    assert run_script(stack, "users.py", "rotate-key", *common).returncode == 0
    assert run_script(stack, "users.py", "forget", *common).returncode == 2  # not without --yes
    assert run_script(stack, "users.py", "forget", *common, "--yes").returncode == 0
    assert Container(stack.settings).account.export(user).memories == []


def test_a_user_exports_and_forgets_their_account_over_http(
    stack: RunningStack, api: ApiClient, aws: Callable[[str], Any]
) -> None:
    user, other = new_user(), new_user()
    me = api.with_key(stack.container.api_keys.issue(user, "account test").key)
    them = api.with_key(stack.container.api_keys.issue(other, "account test").key)
    mine = me.post("/memory", {"action": "store", "content": "my passport number is X123", "metadata": {"k": 1}})
    theirs = them.post("/memory", {"action": "store", "content": "their secret"})
    assert mine.status == theirs.status == 201
    assert me.post("/chat", {"message": "hello", "sessionId": "s1", "useMemory": False}).status == 200

    exported = me.post("/account", {"action": "export"})
    assert exported.status == 200, exported
    assert exported.json["userId"] == user
    assert [(m["id"], m["content"], m["metadata"]) for m in exported.json["memories"]] == [
        (mine.json["id"], "my passport number is X123", {"k": 1})
    ]
    assert [(t["sessionId"], t["role"]) for t in exported.json["conversations"]] == [
        ("s1", "user"),
        ("s1", "assistant"),
    ]

    refused = me.post("/account", {"action": "forget"})
    assert refused.status == 400 and refused.json["error"]["field"] == "confirm"
    forgotten = me.post("/account", {"action": "forget", "confirm": "forget everything"})
    assert forgotten.status == 200, forgotten
    assert forgotten.json["deleted"]["memories"] == 1
    assert forgotten.json["deleted"]["conversationTurns"] == 2
    assert forgotten.json["deleted"]["apiKeys"] == 1
    assert items_of(aws, stack, user) == {key: 0 for key in items_of(aws, stack, user)}
    stack.container.api_keys.forget_checked()  # as if AuthCacheSeconds had passed
    assert me.post("/memory", {"action": "list"}).status == 401  # the key went with the account
    assert them.post("/memory", {"action": "retrieve", "id": theirs.json["id"]}).json["content"] == "their secret"
