"""Forget reaches every warm container: two composition roots (two Lambda environments, say) on one
emulator, each with a warm index of the user; a forget in one must empty the other's index, and no
snapshot may ever again hold the forgotten memories or seal them under a key made after the forget."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pai_core.adapters.dynamodb_changelog import CHANGES_SUFFIX, HEAD_ID
from pai_core.bootstrap import Container
from pai_core.crypto import KeyMaterialDestroyed
from pai_core.models import VECTOR_DTYPE
from pai_core.search import LiveMemoryIndex
from pai_core.search.snapshot import decode
from pai_local.stack import RunningStack

pytestmark = pytest.mark.integration


def container_with_small_index(stack: RunningStack) -> tuple[Container, LiveMemoryIndex]:
    """A composition root as the functions build it, whose index writes snapshots after a handful
    of changes."""
    container = Container(stack.settings)
    index = container.search_index
    assert isinstance(index, LiveMemoryIndex)
    index.policy = dataclasses.replace(index.policy, snapshot_min_vectors=5, snapshot_rebuild_changes=3)
    return container, index


def branch_keys_of(aws: Callable[[str], Any], stack: RunningStack, user: str) -> int:
    items: list[dict[str, Any]] = []
    for page in aws("dynamodb").get_paginator("scan").paginate(TableName=stack.settings.keystore_table):
        items += page["Items"]
    # Key items carry a wrapped key; the `retired` marker a forget leaves holds only a version number.
    return sum(1 for item in items if item.get("owner", {}).get("S", "").split("#")[0] == user and "wrappedKey" in item)


def snapshot_ids(aws: Callable[[str], Any], stack: RunningStack, user: str) -> list[set[str]]:
    """The ids in every stored version of the user's snapshot that can still be opened."""
    s3, bucket = aws("s3"), stack.settings.knowledge_bucket or ""
    store = Container(stack.settings).snapshot_store
    assert store is not None
    key = store.key(user)
    found: list[set[str]] = []
    for version in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
        if version["Key"] != key:
            continue
        sealed = s3.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
        try:
            payload = store._cipher.decrypt(sealed, store._context(user))
        except KeyMaterialDestroyed:
            continue  # sealed under the destroyed key: shredded
        found.append({ref.id for ref in decode(payload).refs if ref})
    return found


def test_a_forget_in_one_container_empties_the_warm_index_of_another(
    stack: RunningStack, aws: Callable[[str], Any]
) -> None:
    user = f"fgt-{uuid.uuid4().hex[:12]}"
    first, first_index = container_with_small_index(stack)
    second, second_index = container_with_small_index(stack)
    doomed = [
        first.memories.remember(user, content=f"Forgotten fact {i}: the key is in box {i}", category="f", metadata={})
        for i in range(20)
    ]
    doomed_ids = {memory.id for memory in doomed}
    assert first.memories.search(user, "where is the key?", top=5)
    assert second.memories.search(user, "where is the key?", top=5)  # warm, and it wrote a snapshot
    # Two more stores that the second container picks up without reaching its snapshot threshold.
    doomed_ids |= {
        first.memories.remember(user, content=f"Forgotten late fact {i}", category="f", metadata={}).id
        for i in range(2)
    }
    assert second.memories.search(user, "late fact", top=5)
    index = second_index.index_of(user)
    assert index is not None and doomed_ids <= set(index.ids())

    first.account.forget(user)

    # A search alone in the second container makes no key and writes no snapshot.
    assert second.memories.search(user, "where is the key?", top=30) == []
    assert branch_keys_of(aws, stack, user) == 0
    assert snapshot_ids(aws, stack, user) == []

    # The same user id stores again: the new memories get a new key, the forgotten ones stay gone.
    fresh = [
        first.memories.remember(user, content=f"New life fact {i}: the key is in the car", category="f", metadata={})
        for i in range(3)
    ]
    hits = second.memories.search(user, "where is the key?", top=30)
    assert {hit.memory.id for hit in hits} == {memory.id for memory in fresh}
    index = second_index.index_of(user)
    assert index is not None and not doomed_ids & set(index.ids())
    for ids in snapshot_ids(aws, stack, user):
        assert not ids & doomed_ids
    assert first_index.index_of(user) is None or not doomed_ids & set(first_index.index_of(user).ids())  # type: ignore[union-attr]
    head = aws("dynamodb").get_item(
        TableName=stack.settings.knowledge_table, Key={"owner": {"S": user + CHANGES_SUFFIX}, "id": {"S": HEAD_ID}}
    )
    assert int(head["Item"]["generation"]["N"]) >= 1


def test_old_embeddings_never_reach_a_snapshot_sealed_after_the_forget(
    stack: RunningStack, aws: Callable[[str], Any]
) -> None:
    """Also with the second container's vectors compared to every snapshot row, not only ids."""
    user = f"fgt-{uuid.uuid4().hex[:12]}"
    first, _ = container_with_small_index(stack)
    second, second_index = container_with_small_index(stack)
    for i in range(6):
        first.memories.remember(user, content=f"Shredded fact {i}", category="f", metadata={})
    second.memories.search(user, "fact", top=3)
    index = second_index.index_of(user)
    assert index is not None
    old_vectors = np.stack(
        [np.frombuffer(row.vector, dtype=VECTOR_DTYPE) for row in first.memory_repository.all_items(user)]
    )
    first.memories.remember(user, content="Shredded fact late", category="f", metadata={})
    second.memories.search(user, "fact", top=3)
    first.account.forget(user)
    second.keyring.drop_cached(user)  # as once its key cache's max age has passed
    for i in range(6):
        first.memories.remember(user, content=f"Another topic {i}: gardening", category="g", metadata={})
    second.memories.search(user, "gardening", top=3)
    assert second_index.events["generation_moved"] == 1
    store = second.snapshot_store
    assert store is not None
    payload = store.load(user)
    assert payload is not None  # written after the forget, from the new memories alone
    snapshot = decode(payload)
    assert snapshot.generation == 1 and len([ref for ref in snapshot.refs if ref]) == 6
    assert float((snapshot.vectors @ old_vectors.T).max()) < 0.999
