"""Branch-key versions are never reused for an owner, on the emulator's DynamoDB and KMS: after a
forget destroys a user's keys, a user made again under the same name starts past every destroyed
version, so a warm container still caching an old key can never take it for a new one."""

from __future__ import annotations

import uuid

import pytest

from pai_core.adapters.dynamodb_keystore import DynamoBranchKeyStore
from pai_core.bootstrap import Container
from pai_core.crypto import KeyMaterialDestroyed, RecordContext, WrappedBranchKey
from pai_local.stack import RunningStack

pytestmark = pytest.mark.integration


def new_user() -> str:
    return f"keyver-{uuid.uuid4().hex[:12]}"


def context(user: str, record: str) -> RecordContext:
    return RecordContext(partition={"table": "keystore-test", "owner": user}, record={"id": record, "attribute": "x"})


def version_of(frame: bytes) -> int:
    return int.from_bytes(frame[1:5], "big")


def test_a_user_made_again_after_a_forget_gets_a_new_version_everywhere(stack: RunningStack) -> None:
    user = new_user()
    stale, forgetter = Container(stack.settings), Container(stack.settings)
    stale.cipher.encrypt(b"before the forget", context(user, "m1"))  # its cache holds version 1
    forgetter.keyring.rotate(user)
    assert forgetter.keyring.destroy(user) == 3  # versions 1 and 2, and the active pointer

    sealed = forgetter.cipher.encrypt(b"the user made again", context(user, "m2"))
    assert version_of(sealed) == 3
    assert stale.cipher.decrypt(sealed, context(user, "m2")) == b"the user made again"
    # What the stale container seals with its cached key names a destroyed version: unreadable, never
    # taken for the new user's key.
    sealed_stale = stale.cipher.encrypt(b"under the destroyed key", context(user, "m3"))
    assert version_of(sealed_stale) == 1
    with pytest.raises(KeyMaterialDestroyed):
        Container(stack.settings).cipher.decrypt(sealed_stale, context(user, "m3"))


def test_the_store_refuses_a_first_key_at_a_destroyed_version(stack: RunningStack) -> None:
    user = new_user()
    container = Container(stack.settings)
    store = DynamoBranchKeyStore(container.dynamodb, stack.settings.keystore_table, clock=container.clock)
    assert store.first_version(user) == 1
    assert store.activate(WrappedBranchKey(user, 1, b"wrapped one"), replacing=None)
    assert store.destroy(user) == 2
    assert store.get(user, 1) is None and store.active(user) is None
    assert store.first_version(user) == 2
    # A key made from a version read before the destroy loses, whatever the race.
    assert not store.activate(WrappedBranchKey(user, 1, b"made during the forget"), replacing=None)
    assert store.activate(WrappedBranchKey(user, 2, b"wrapped two"), replacing=None)
    assert store.destroy(user) == 2
    assert store.first_version(user) == 3
    assert store.destroy(user) == 0  # nothing left to destroy; the marker stays where it was
    assert store.first_version(user) == 3
