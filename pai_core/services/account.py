"""A user's whole account: everything they stored, decrypted, for them alone; and forgetting them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pai_core.crypto import BranchKeyring
from pai_core.models import Memory, Turn
from pai_core.ports import ConversationArchive, CredentialRevoker, MemoryArchive, OwnerGenerations, SnapshotPurger


@dataclass(frozen=True)
class AccountExport:
    memories: list[Memory]
    turns: list[tuple[str, Turn]]


@dataclass(frozen=True)
class ForgetReport:
    key_versions: int
    api_keys: int
    memories: int
    conversation_turns: int
    snapshot_versions: int


class AccountService:
    def __init__(
        self,
        memories: MemoryArchive,
        conversations: ConversationArchive,
        keyring: BranchKeyring,
        *,
        snapshots: SnapshotPurger | None = None,
        credentials: CredentialRevoker | None = None,
        generations: OwnerGenerations | None = None,
        on_forgotten: Callable[[str], None] | None = None,
    ) -> None:
        """`on_forgotten` lets in-memory state of this container (a search index) drop the user;
        `generations` tells every other container's (pai_core.search.live)."""
        self._memories = memories
        self._generations = generations
        self._conversations = conversations
        self._keyring = keyring
        self._snapshots = snapshots
        self._credentials = credentials
        self._on_forgotten = on_forgotten

    def export(self, owner: str) -> AccountExport:
        return AccountExport(
            memories=list(self._memories.all_memories(owner)),
            turns=sorted(self._conversations.all_turns(owner), key=lambda session_turn: session_turn[1].at),
        )

    def forget(self, owner: str) -> ForgetReport:
        """The generation moves first, then the key material goes.

        Generation first: from then on no container writes a snapshot of the user (each reads the
        generation just before writing and refuses, without asking the keyring) and every warm index
        of the user is dropped at its next search. A container that read the old generation just
        before the move either seals with a key that is destroyed next (unreadable), or finds no key
        (a snapshot never makes one), and takes its object back when it reads the generation after
        writing. Key material next: from that moment every copy of the user's data, here, in the
        bucket or in any backup, is unreadable, even if a later step fails. Every step can run
        again, so a failed forget is finished by forgetting again."""
        if self._generations is not None:
            self._generations.move_generation(owner)
        key_versions = self._keyring.destroy(owner)
        api_keys = self._credentials.revoke_all(owner) if self._credentials is not None else 0
        memories = self._memories.purge(owner)
        turns = self._conversations.purge(owner)
        snapshot_versions = self._snapshots.purge(owner) if self._snapshots is not None else 0
        if self._on_forgotten is not None:
            self._on_forgotten(owner)
        return ForgetReport(
            key_versions=key_versions,
            api_keys=api_keys,
            memories=memories,
            conversation_turns=turns,
            snapshot_versions=snapshot_versions,
        )
