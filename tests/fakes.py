"""In-memory stand-ins for the ports, for unit tests (no network, no AWS, no model files)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pai_core.adapters.metrics_emf import EmfMetrics
from pai_core.auth import ApiKeyInfo, ApiKeys, StoredApiKey
from pai_core.config import Settings
from pai_core.crypto import (
    BranchKeyring,
    DataKey,
    EncryptionContext,
    EnvelopeCipher,
    KeyringPolicy,
    WrappedBranchKey,
    serialize_context,
)
from pai_core.errors import Conflict, IntegrityError, UpstreamUnavailable
from pai_core.limits import UsageLimits
from pai_core.models import (
    ChatMessage,
    Completion,
    IndexedItem,
    ItemRef,
    Memory,
    MemoryEdit,
    MemoryPage,
    MemoryVersion,
    Origin,
    TextDelta,
    Turn,
    Usage,
)
from pai_core.services import AccountService, ChatService, MemoryService


class FakeKeyService:
    """KMS in a box: wraps data keys with a local master key, bound to the context; counts calls."""

    def __init__(self) -> None:
        self._master = AESGCM(os.urandom(32))
        self.generated = 0
        self.decrypted = 0
        self.fail_with: Exception | None = None

    def generate_data_key(self, context: EncryptionContext) -> DataKey:
        if self.fail_with is not None:
            raise self.fail_with
        self.generated += 1
        plaintext = os.urandom(32)
        nonce = os.urandom(12)
        wrapped = nonce + self._master.encrypt(nonce, plaintext, serialize_context(context))
        return DataKey(plaintext=plaintext, wrapped=wrapped)

    def decrypt_data_key(self, wrapped: bytes, context: EncryptionContext) -> bytes:
        if self.fail_with is not None:
            raise self.fail_with
        self.decrypted += 1
        try:
            return self._master.decrypt(wrapped[:12], wrapped[12:], serialize_context(context))
        except Exception as exc:
            raise IntegrityError("data key does not unwrap under this context") from exc


class InMemoryBranchKeyStore:
    """The key store table in a dict; counts reads like GetItems."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], WrappedBranchKey] = {}
        self.active_versions: dict[str, int] = {}
        self.retired_through: dict[str, int] = {}  # owner -> highest version ever destroyed
        self.reads = 0

    def active(self, owner: str) -> WrappedBranchKey | None:
        self.reads += 1
        version = self.active_versions.get(owner)
        return None if version is None else self.items[(owner, version)]

    def get(self, owner: str, version: int) -> WrappedBranchKey | None:
        self.reads += 1
        return self.items.get((owner, version))

    def first_version(self, owner: str) -> int:
        self.reads += 1
        return self.retired_through.get(owner, 0) + 1

    def activate(self, key: WrappedBranchKey, *, replacing: int | None) -> bool:
        if self.active_versions.get(key.owner) != replacing or (key.owner, key.version) in self.items:
            return False
        if key.version <= self.retired_through.get(key.owner, 0):
            return False
        self.items[(key.owner, key.version)] = key
        self.active_versions[key.owner] = key.version
        return True

    def destroy(self, owner: str) -> int:
        doomed = [k for k in self.items if k[0] == owner]
        if doomed:
            self.retired_through[owner] = max(self.retired_through.get(owner, 0), *(k[1] for k in doomed))
        for k in doomed:
            del self.items[k]
        return len(doomed) + (1 if self.active_versions.pop(owner, None) is not None else 0)


def fake_keyring(
    kms: FakeKeyService | None = None, store: InMemoryBranchKeyStore | None = None, **policy: float
) -> BranchKeyring:
    return BranchKeyring(
        store if store is not None else InMemoryBranchKeyStore(),
        kms if kms is not None else FakeKeyService(),
        keystore_name="pai-keystore-test",
        policy=KeyringPolicy(**policy),  # type: ignore[arg-type]
    )


def fake_cipher(kms: FakeKeyService | None = None, store: InMemoryBranchKeyStore | None = None) -> EnvelopeCipher:
    return EnvelopeCipher(fake_keyring(kms, store))


class FixedClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def dynamo_memories(client: Any, table: str, cipher: Any, *, clock: Any = None) -> Any:
    """The production memory repository (and its change log) over a scripted or recording client."""
    from pai_core.adapters.dynamodb_changelog import DynamoChangeLog
    from pai_core.adapters.dynamodb_memories import DynamoMemoryRepository

    changes = DynamoChangeLog(client, table, clock=clock or FixedClock(), sleep=lambda _: None)
    return DynamoMemoryRepository(client, table, cipher, context_name=table, changes=changes, sleep=lambda _: None)


class HashingEmbedder:
    """Bag of words hashed into 384 dims: texts that share words are similar. Deterministic."""

    dimensions = 384

    def __init__(self) -> None:
        self.calls = 0
        self.fail_with: Exception | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls += 1
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % self.dimensions
                rows[row, bucket] += 1.0
            norm = np.linalg.norm(rows[row])
            rows[row] = rows[row] / norm if norm else rows[row]
        return rows


@dataclass
class InMemoryMemoryRepository:
    items: dict[tuple[str, str], tuple[Memory, bytes]] = field(default_factory=dict)
    # Every version of each memory, oldest first (the last one is the memory as it is).
    versions: dict[tuple[str, str], list[MemoryVersion]] = field(default_factory=dict)
    fail_with: Exception | None = None

    def add(self, owner: str, memory: Memory, embedding: np.ndarray) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.items[(owner, memory.id)] = (memory, np.asarray(embedding, dtype="<f4").tobytes())
        self.versions[(owner, memory.id)] = [MemoryVersion.current(memory)]

    def add_many(self, owner: str, memories: Sequence[tuple[Memory, np.ndarray]]) -> None:
        if self.fail_with is not None:  # all or nothing, like one batch that failed before writing
            raise self.fail_with
        for memory, embedding in memories:
            self.add(owner, memory, embedding)

    def update(
        self,
        owner: str,
        memory_id: str,
        edit: MemoryEdit,
        *,
        embedding: np.ndarray | None,
        reason: str | None,
        at: datetime,
    ) -> Memory | None:
        if self.fail_with is not None:
            raise self.fail_with
        found = self.items.get((owner, memory_id))
        if found is None:
            return None
        memory, vector = found
        changed = replace(
            memory,
            content=edit.content if edit.content is not None else memory.content,
            category=edit.category if edit.category is not None else memory.category,
            metadata=edit.metadata if edit.metadata is not None else memory.metadata,
            updated_at=at,
        )
        if embedding is not None:
            vector = np.asarray(embedding, dtype="<f4").tobytes()
        self.items[(owner, memory_id)] = (changed, vector)
        versions = self.versions[(owner, memory_id)]
        versions[-1] = replace(versions[-1], valid_to=at)
        versions.append(
            MemoryVersion(
                content=changed.content,
                category=changed.category,
                metadata=changed.metadata,
                valid_from=at,
                valid_to=None,
                reason=reason,
            )
        )
        return changed

    def history(self, owner: str, memory_id: str) -> list[MemoryVersion] | None:
        versions = self.versions.get((owner, memory_id))
        return None if versions is None else list(versions)

    def get(self, owner: str, memory_id: str) -> Memory | None:
        found = self.items.get((owner, memory_id))
        return None if found is None else found[0]

    def get_many(self, owner: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        return {i: self.items[(owner, i)][0] for i in memory_ids if (owner, i) in self.items}

    def page(
        self, owner: str, *, category: str | None, limit: int, cursor: str | None, origin: Origin | None = None
    ) -> MemoryPage:
        ids = sorted(
            (
                i
                for (o, i), (m, _) in self.items.items()
                if o == owner and category in (None, m.category) and origin in (None, m.origin)
            ),
            reverse=True,
        )
        if cursor is not None:
            ids = [i for i in ids if i < cursor]
        page, rest = ids[:limit], ids[limit:]
        return MemoryPage(items=[self.items[(owner, i)][0] for i in page], cursor=page[-1] if rest else None)

    def delete(self, owner: str, memory_id: str) -> bool:
        self.versions.pop((owner, memory_id), None)
        return self.items.pop((owner, memory_id), None) is not None

    def vectors(self, owner: str) -> list[IndexedItem]:
        return [
            IndexedItem(ref=ItemRef("memory", i), category=m.category, vector=v, text=m.content)
            for (o, i), (m, v) in self.items.items()
            if o == owner
        ]

    def all_memories(self, owner: str) -> list[Memory]:
        return [m for (o, _), (m, _) in sorted(self.items.items()) if o == owner]

    def purge(self, owner: str) -> int:
        doomed = [key for key in self.items if key[0] == owner]
        for key in doomed:
            del self.items[key]
            self.versions.pop(key, None)
        return len(doomed)


@dataclass
class InMemoryConversationRepository:
    turns: dict[tuple[str, str], list[Turn]] = field(default_factory=dict)
    ttl: timedelta = timedelta(hours=24)

    def append(self, owner: str, session_id: str, turn: Turn) -> None:
        self.turns.setdefault((owner, session_id), []).append(turn)

    def recent(self, owner: str, session_id: str, *, now: datetime, limit: int) -> list[Turn]:
        live = [t for t in self.turns.get((owner, session_id), []) if t.at + self.ttl > now]
        return live[-limit:] if limit > 0 else []

    def all_turns(self, owner: str) -> list[tuple[str, Turn]]:
        return [(session, turn) for (o, session), turns in self.turns.items() if o == owner for turn in turns]

    def purge(self, owner: str) -> int:
        doomed = [key for key in self.turns if key[0] == owner]
        return sum(len(self.turns.pop(key)) for key in doomed)


class ScriptedChatModel:
    """Answers with a fixed reply (or fails), records every prompt; one token per word."""

    name = "scripted-model"

    def __init__(self, reply: str = "Noted.", *, context_tokens: int = 2048) -> None:
        self.reply = reply
        self.context_tokens = context_tokens
        self.prompts: list[list[ChatMessage]] = []
        self.fail_with: Exception | None = None
        self.fail_after_deltas: int | None = None  # a stream that breaks after this many pieces

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        self.prompts.append(list(messages))
        if self.fail_with is not None:
            raise self.fail_with
        prompt_tokens = sum(self.count_tokens(m.content) for m in messages)
        return Completion(
            text=self.reply,
            model=self.name,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=self.count_tokens(self.reply)),
        )

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        completion = self.complete(messages, max_tokens=max_tokens)
        for index, word in enumerate(completion.text.split(" ")):
            if self.fail_after_deltas is not None and index == self.fail_after_deltas:
                raise UpstreamUnavailable("the model's stream broke")
            yield TextDelta(word if index == 0 else " " + word)
        yield completion


class InMemoryUsageCounters:
    """The usage table in a dict: totals and each counter's expiry, as DynamoUsageCounters keeps them."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.expiries: dict[str, datetime] = {}
        self.fail_with: Exception | None = None

    def add(self, name: str, amount: int, *, expires_at: datetime) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        self.totals[name] = self.totals.get(name, 0) + amount
        self.expiries[name] = expires_at
        return self.totals[name]

    def get(self, name: str) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        return self.totals.get(name, 0)


class InMemoryApiKeyStore:
    """The API keys table in a dict; counts reads (checking a key must cost one)."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredApiKey] = {}
        self.reads = 0
        self.fail_with: Exception | None = None

    def add(self, key: StoredApiKey) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if key.info.key_id in self.keys:
            raise Conflict("an API key with this id exists")
        self.keys[key.info.key_id] = key

    def get(self, key_id: str) -> StoredApiKey | None:
        self.reads += 1
        if self.fail_with is not None:
            raise self.fail_with
        return self.keys.get(key_id)

    def for_user(self, user_id: str) -> list[ApiKeyInfo]:
        return [key.info for key in self.keys.values() if key.info.user_id == user_id]

    def every_key(self) -> list[ApiKeyInfo]:
        return [key.info for key in self.keys.values()]

    def revoke(self, key_id: str, *, at: datetime) -> ApiKeyInfo | None:
        stored = self.keys.get(key_id)
        if stored is None:
            return None
        if stored.info.revoked_at is None:
            stored = StoredApiKey(replace(stored.info, revoked_at=at), stored.digest)
            self.keys[key_id] = stored
        return stored.info


DEFAULT_KEY_ID = "0123456789abcdef"


def as_user(event: dict[str, Any], user_id: str | None = None, *, key_id: str = DEFAULT_KEY_ID) -> dict[str, Any]:
    """`event` as API Gateway passes it on once the API key authorizer has accepted a key of
    `user_id` (by default the default settings' owner, which the fakes' checks read)."""
    authorizer = {"lambda": {"userId": user_id or Settings().owner, "keyId": key_id}}
    event.setdefault("requestContext", {})["authorizer"] = authorizer
    return event


class RecordingMetrics(EmfMetrics):
    """The real EMF adapter, its lines kept instead of printed: what each flush wrote."""

    def __init__(self, namespace: str = "PAI/test") -> None:
        self.lines: list[str] = []
        super().__init__(namespace, emit=self.lines.append)

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def counts(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every flushed value by metric name and its dimensions (service included)."""
        counted: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for document in self.documents():
            (directive,) = document["_aws"]["CloudWatchMetrics"]
            (dimension_names,) = directive["Dimensions"]
            dimensions = frozenset((name, document[name]) for name in dimension_names)
            for metric in directive["Metrics"]:
                key = (metric["Name"], dimensions)
                counted[key] = counted.get(key, 0.0) + sum(document[metric["Name"]])
        return counted

    def total(self, name: str, **dimensions: str) -> float:
        """The sum of `name` over every line whose dimensions include these."""
        wanted = set(dimensions.items())
        return sum(value for (metric, dims), value in self.counts().items() if metric == name and wanted <= dims)


@dataclass
class FakeContainer:
    """What the handlers need of the composition root, built from fakes."""

    settings: Settings = field(default_factory=Settings)
    clock: FixedClock = field(default_factory=FixedClock)
    embedder: HashingEmbedder = field(default_factory=HashingEmbedder)
    memory_repository: InMemoryMemoryRepository = field(default_factory=InMemoryMemoryRepository)
    conversations: InMemoryConversationRepository = field(default_factory=InMemoryConversationRepository)
    chat_model: ScriptedChatModel = field(default_factory=ScriptedChatModel)
    usage: InMemoryUsageCounters = field(default_factory=InMemoryUsageCounters)
    api_key_store: InMemoryApiKeyStore = field(default_factory=InMemoryApiKeyStore)
    storage_down: bool = False
    metrics: RecordingMetrics = field(default_factory=RecordingMetrics)

    def __post_init__(self) -> None:
        self.memories = MemoryService(self.memory_repository, self.embedder, self.clock)
        self.limits = UsageLimits(
            self.usage,
            self.clock,
            requests_per_minute=self.settings.rate_limit_per_minute,
            daily_token_budget=self.settings.daily_token_budget,
        )
        self.storage_probe = self
        self.api_keys = ApiKeys(self.api_key_store, self.clock)
        # The knowledge base (tests/fakes_documents.py), searched with memories by one scanning index.
        from pai_core.documents.parse import parse_document
        from pai_core.services.documents import DocumentService
        from pai_core.services.retrieval import RetrievalService
        from tests.fakes_documents import (
            InMemoryDocumentFiles,
            InMemoryDocumentRepository,
            ScanningIndex,
            fake_fingerprint,
            word_spans,
        )

        self.document_repository = InMemoryDocumentRepository()
        self.document_files = InMemoryDocumentFiles()
        index = ScanningIndex([_MemorySource(self.memory_repository), self.document_repository])
        self.documents = DocumentService(
            self.document_repository,
            self.document_files,
            self.embedder,
            self.clock,
            spans=word_spans,
            fingerprint=fake_fingerprint,
            index=index,
            parser=parse_document,
        )
        self.retrieval = RetrievalService(self.memory_repository, self.document_repository, self.embedder, index)
        self.chat = ChatService(
            self.conversations,
            self.memories,
            self.chat_model,
            self.clock,
            history_max_turns=40,
            max_output_tokens=64,
            limits=self.limits,
            retrieval=self.retrieval,
            metrics=self.metrics,
        )
        self.account = AccountService(
            self.memory_repository, self.conversations, fake_keyring(), documents=self.documents
        )

    def check(self) -> None:
        if self.storage_down:
            raise UpstreamUnavailable("DynamoDB cannot be reached")


@dataclass
class _MemorySource:
    repository: InMemoryMemoryRepository

    def all_items(self, owner: str) -> list[IndexedItem]:
        return self.repository.vectors(owner)

    def items_by_id(self, owner: str, ids: Sequence[str]) -> list[IndexedItem]:
        return [item for item in self.repository.vectors(owner) if item.ref.id in set(ids)]


class FakeLambdaContext:
    """What Powertools' `inject_lambda_context` reads of the real LambdaContext."""

    function_name = "pai-test-function"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:pai-test-function"
    aws_request_id = "6f8e2c1a-3b4d-4e5f-9a0b-1c2d3e4f5a6b"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000
