"""A user's export and "forget me", over in-memory stores and the real key hierarchy."""

from __future__ import annotations

import pytest

from pai_core.crypto import EnvelopeCipher, KeyMaterialDestroyed, RecordContext
from pai_core.errors import InvalidInput, UpstreamUnavailable
from pai_core.models import Turn
from pai_core.requests import FORGET_CONFIRMATION, ExportAccount, ForgetAccount, parse_account_command
from pai_core.services import AccountService, MemoryService
from tests.fakes import (
    FakeKeyService,
    FixedClock,
    HashingEmbedder,
    InMemoryBranchKeyStore,
    InMemoryConversationRepository,
    InMemoryMemoryRepository,
    fake_keyring,
)


class RecordingPurger:
    def __init__(self) -> None:
        self.purged: list[str] = []

    def purge(self, owner: str) -> int:
        self.purged.append(owner)
        return 2


class RecordingRevoker:
    def __init__(self) -> None:
        self.revoked: list[str] = []

    def revoke_all(self, user_id: str) -> int:
        self.revoked.append(user_id)
        return 1


class World:
    def __init__(self) -> None:
        self.clock = FixedClock()
        self.kms, self.keys = FakeKeyService(), InMemoryBranchKeyStore()
        self.keyring = fake_keyring(self.kms, self.keys)
        self.memory_repository = InMemoryMemoryRepository()
        self.conversations = InMemoryConversationRepository()
        self.memories = MemoryService(self.memory_repository, HashingEmbedder(), self.clock)
        self.snapshots, self.credentials = RecordingPurger(), RecordingRevoker()
        self.forgotten_here: list[str] = []
        self.account = AccountService(
            self.memory_repository,
            self.conversations,
            self.keyring,
            snapshots=self.snapshots,
            credentials=self.credentials,
            on_forgotten=self.forgotten_here.append,
        )

    def remember(self, owner: str, text: str) -> str:
        return self.memories.remember(owner, content=text, category="general", metadata={"k": 1}).id


@pytest.fixture
def world() -> World:
    return World()


def test_export_holds_everything_the_user_stored_and_nothing_of_anyone_else(world: World) -> None:
    ids = [world.remember("alice", f"alice's memory {i}") for i in range(3)]
    world.remember("bob", "bob's memory")
    world.conversations.append("alice", "s1", Turn(role="user", content="hi", at=world.clock.now()))
    world.clock.advance(seconds=1)
    world.conversations.append("alice", "s1", Turn(role="assistant", content="hello", at=world.clock.now()))
    world.conversations.append("bob", "s9", Turn(role="user", content="bob's turn", at=world.clock.now()))

    export = world.account.export("alice")

    assert sorted(m.id for m in export.memories) == sorted(ids)
    assert [(s, t.role, t.content) for s, t in export.turns] == [("s1", "user", "hi"), ("s1", "assistant", "hello")]


def test_forget_destroys_keys_first_then_deletes_everything(world: World) -> None:
    cipher = EnvelopeCipher(world.keyring)
    context = RecordContext(partition={"table": "backup", "owner": "alice"}, record={"id": "x"})
    backup_copy = cipher.encrypt(b"a copy in last week's backup", context)
    world.remember("alice", "to be forgotten")
    world.remember("bob", "to be kept")
    world.conversations.append("alice", "s1", Turn(role="user", content="hi", at=world.clock.now()))

    report = world.account.forget("alice")

    assert (report.memories, report.conversation_turns, report.snapshot_versions, report.api_keys) == (1, 1, 2, 1)
    assert report.key_versions == 2  # version 1 and the active pointer
    assert world.account.export("alice").memories == [] and world.account.export("alice").turns == []
    assert [m.content for m in world.account.export("bob").memories] == ["to be kept"]
    assert world.snapshots.purged == world.credentials.revoked == world.forgotten_here == ["alice"]
    with pytest.raises(KeyMaterialDestroyed):
        EnvelopeCipher(fake_keyring(world.kms, world.keys)).decrypt(backup_copy, context)  # crypto-shredded


def test_a_forget_that_fails_half_way_leaves_nothing_readable_and_finishes_when_run_again(world: World) -> None:
    world.remember("alice", "to be forgotten")
    world.memory_repository.purge = _failing  # type: ignore[method-assign]
    with pytest.raises(UpstreamUnavailable):
        world.account.forget("alice")
    assert world.keys.items == {}  # the keys went first: what is left is noise
    del world.memory_repository.purge  # type: ignore[method-assign]
    report = world.account.forget("alice")
    assert (report.key_versions, report.memories) == (0, 1)


def _failing(owner: str) -> int:
    raise UpstreamUnavailable("DynamoDB is unavailable")


def test_account_commands_parse_and_forget_needs_confirmation() -> None:
    assert parse_account_command({"action": "export"}) == ExportAccount()
    assert parse_account_command({"action": "forget", "confirm": FORGET_CONFIRMATION}) == ForgetAccount()
    for body in ({"action": "forget"}, {"action": "forget", "confirm": True}, {"action": "forget", "confirm": "yes"}):
        with pytest.raises(InvalidInput) as raised:
            parse_account_command(body)
        assert raised.value.field == "confirm"
    for body in ({}, {"action": "delete"}, {"action": 3}):
        with pytest.raises(InvalidInput) as raised:
            parse_account_command(body)
        assert raised.value.field == "action"
