"""The composition root: builds adapters and services from Settings, once per container.

Parts are built on first use, so the search function never loads the chat model and the memory
function never opens llama.cpp.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from pai_core.adapters.aws_deadline import attempt_seconds, bound_by_request_deadline
from pai_core.adapters.aws_errors import translated_aws_errors
from pai_core.adapters.dynamodb_api_keys import DynamoApiKeyStore
from pai_core.adapters.dynamodb_changelog import DynamoChangeLog
from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.adapters.dynamodb_documents import DynamoDocumentRepository
from pai_core.adapters.dynamodb_keystore import DynamoBranchKeyStore
from pai_core.adapters.dynamodb_memories import DynamoMemoryRepository
from pai_core.adapters.dynamodb_probe import DynamoStorageProbe
from pai_core.adapters.dynamodb_usage import DynamoUsageCounters
from pai_core.adapters.kms import KmsKeyService
from pai_core.adapters.metrics_emf import EmfMetrics
from pai_core.adapters.s3 import S3SnapshotStore
from pai_core.adapters.s3_documents import S3DocumentStore
from pai_core.adapters.sqs_documents import SqsIngestQueue
from pai_core.adapters.sqs_learning import SqsLearningQueue
from pai_core.auth import ApiKeys, KnownKeys
from pai_core.config import ConfigError, Settings
from pai_core.crypto import BranchKeyring, EnvelopeCipher, KeyringPolicy
from pai_core.idempotency import IdempotentRequests
from pai_core.learning.service import EXTRACTION_MODES, LearningService
from pai_core.limits import UsageLimits
from pai_core.ports import NoMetrics
from pai_core.search import AnnSettings, DesignScanSearch, IndexPolicy, LiveMemoryIndex
from pai_core.services import AccountService, ChatService, MemoryService
from pai_core.services.documents import DocumentService
from pai_core.services.retrieval import RetrievalService

if TYPE_CHECKING:
    from pai_core.embedding import OnnxEmbedder
    from pai_core.ports import ChatModel

# One call is bounded: botocore retries throttling and 5xx with exponential backoff and jitter
# ("standard" mode), then the adapters turn the failure into a 503. A request makes several calls in
# a row; the request's deadline (pai_core.deadline) keeps them together inside the function's timeout.
AWS_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5, tcp_keepalive=True
)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Container:
    def __init__(self, settings: Settings, *, chat_model: ChatModel | None = None) -> None:
        self.settings = settings
        self.clock = SystemClock()
        self._chat_model = chat_model
        self._session = boto3.session.Session(region_name=settings.region)

    def client(self, service: str) -> Any:
        client = self._session.client(service, endpoint_url=self.settings.endpoint_url, config=AWS_CLIENT_CONFIG)  # type: ignore[call-overload]
        # Every attempt and retry also fits the request's deadline (pai_core.deadline).
        bound_by_request_deadline(client, seconds_per_attempt=attempt_seconds(AWS_CLIENT_CONFIG))
        return client

    @cached_property
    def metrics(self) -> EmfMetrics | NoMetrics:
        """The invocation's counters, written when the handler returns (handlers/_observability.py)."""
        if self.settings.metrics_namespace is None:
            return NoMetrics()
        return EmfMetrics(self.settings.metrics_namespace)

    @cached_property
    def key_service(self) -> KmsKeyService:
        return KmsKeyService(self.client("kms"), self.settings.kms_key_id, metrics=self.metrics)

    @cached_property
    def keyring(self) -> BranchKeyring:
        """Per-user branch keys, unwrapped by KMS once per user and cache lifetime."""
        return BranchKeyring(
            DynamoBranchKeyStore(self.dynamodb, self.settings.keystore_table, clock=self.clock),
            self.key_service,
            keystore_name=self.settings.keystore_table,
            policy=KeyringPolicy(max_age_seconds=self.settings.key_cache_max_age_seconds),
        )

    @cached_property
    def cipher(self) -> EnvelopeCipher:
        return EnvelopeCipher(self.keyring)

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def embedder(self) -> OnnxEmbedder:
        # Imported here: onnxruntime is most of an import of this module, and the authorizer and
        # the scripts never embed anything.
        from pai_core.embedding import OnnxEmbedder

        return OnnxEmbedder(self.settings.embedding_model_dir)

    @cached_property
    def change_log(self) -> DynamoChangeLog:
        """Each owner's change log and head (version, generation), in the knowledge table."""
        return DynamoChangeLog(self.dynamodb, self.settings.knowledge_table, clock=self.clock, sleep=time.sleep)

    @cached_property
    def memory_repository(self) -> DynamoMemoryRepository:
        return DynamoMemoryRepository(
            self.dynamodb,
            self.settings.knowledge_table,
            self.cipher,
            context_name=f"pai-knowledge-{self.settings.env}",
            changes=self.change_log,
            sleep=time.sleep,
        )

    @cached_property
    def snapshot_store(self) -> S3SnapshotStore | None:
        if not self.settings.knowledge_bucket:
            return None
        return S3SnapshotStore(self.client("s3"), self.settings.knowledge_bucket, self.cipher)

    @cached_property
    def conversation_repository(self) -> DynamoConversationRepository:
        return DynamoConversationRepository(
            self.dynamodb,
            self.settings.conversations_table,
            self.cipher,
            context_name=f"pai-conversations-{self.settings.env}",
            ttl_seconds=self.settings.conversation_ttl_seconds,
        )

    @cached_property
    def search_index(self) -> LiveMemoryIndex | DesignScanSearch:
        """Kept for the life of the container: one index per owner (a bounded LRU), refreshed from
        the table's change feed; snapshots in the knowledge bucket when the function has one."""
        if self.settings.search_mode == "design-scan":
            return DesignScanSearch(self.memory_repository)
        single_threaded_blas()
        snapshots = self.snapshot_store
        threshold = self.settings.search_ann_threshold
        policy = IndexPolicy(
            ann=AnnSettings(threshold=threshold) if threshold > 0 else None,
            full_reload_seconds=float(self.settings.search_full_reload_seconds),
            ranking="dense" if self.settings.search_ranking == "dense" else "hybrid",
        )
        return LiveMemoryIndex(
            self.change_log,
            {"memory": self.memory_repository, "passage": self.document_repository},
            snapshots,
            dimensions=self.embedder.dimensions,
            policy=policy,
            on_generation_moved=self.keyring.drop_cached,
            metrics=self.metrics,
        )

    @cached_property
    def document_repository(self) -> DynamoDocumentRepository:
        """Documents and their passages, in the knowledge table beside the memories."""
        return DynamoDocumentRepository(
            self.dynamodb,
            self.settings.knowledge_table,
            self.cipher,
            context_name=f"pai-knowledge-{self.settings.env}",
            changes=self.change_log,
            sleep=time.sleep,
        )

    @cached_property
    def document_store(self) -> S3DocumentStore:
        if not self.settings.knowledge_bucket:
            raise ConfigError("PAI_KNOWLEDGE_BUCKET is not set: documents are kept in the knowledge bucket")
        return S3DocumentStore(self.client("s3"), self.settings.knowledge_bucket, self.cipher)

    @cached_property
    def documents(self) -> DocumentService:
        from tokenizers import Tokenizer

        from pai_core.crypto.fingerprint import content_fingerprint
        from pai_core.embedding.onnx_embedder import TOKENIZER_FILE

        # The embedder's tokenizer without its truncation: passage sizes are counted in its tokens.
        tokenizer = Tokenizer.from_file(str(self.settings.embedding_model_dir / TOKENIZER_FILE))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        keyring = self.keyring

        def spans(text: str) -> list[tuple[int, int]]:
            return list(tokenizer.encode(text, add_special_tokens=False).offsets)

        return DocumentService(
            self.document_repository,
            self.document_store,
            self.embedder,
            self.clock,
            spans=spans,
            fingerprint=lambda owner, content: content_fingerprint(keyring, owner, content),
            index=self.search_index,
            queue=self.documents_queue,
            inline_max_passages=self.settings.documents_inline_max_passages,
        )

    @cached_property
    def documents_queue(self) -> SqsIngestQueue | None:
        """Where the documents function sends large uploads to be ingested; None: none is configured."""
        if not self.settings.documents_queue_url:
            return None
        return SqsIngestQueue(self.client("sqs"), self.settings.documents_queue_url)

    @cached_property
    def retrieval(self) -> RetrievalService:
        """Search over memories and document passages together (/search, /chat)."""
        return RetrievalService(self.memory_repository, self.document_repository, self.embedder, self.search_index)

    @cached_property
    def memories(self) -> MemoryService:
        return MemoryService(self.memory_repository, self.embedder, self.clock, index=self.search_index)

    @cached_property
    def chat_model(self) -> ChatModel:
        if self._chat_model is not None:
            return self._chat_model
        if self.settings.llm_provider == "bedrock":
            from pai_core.adapters.llm_bedrock import BedrockChatModel

            config = Config(
                retries={"total_max_attempts": self.settings.llm_max_attempts, "mode": "standard"},
                connect_timeout=2,
                read_timeout=self.settings.llm_timeout_seconds,
            )
            client = self._session.client("bedrock-runtime", endpoint_url=self.settings.llm_endpoint_url, config=config)
            bound_by_request_deadline(client, seconds_per_attempt=attempt_seconds(config))
            return BedrockChatModel(
                client, self.settings.bedrock_model_id, context_tokens=self.settings.llm_context_tokens
            )
        if self.settings.llm_provider == "openai":
            from pai_core.adapters.llm_openai import OpenAiChatModel

            return OpenAiChatModel(
                base_url=self.settings.openai_base_url,
                api_key=self._openai_api_key(),
                model=self.settings.openai_model,
                context_tokens=self.settings.llm_context_tokens,
                timeout_seconds=self.settings.llm_timeout_seconds,
                max_attempts=self.settings.llm_max_attempts,
            )
        from pai_core.adapters.llm_local import local_server_chat_model

        if self.settings.local_llm_url is None:
            raise ConfigError(
                "PAI_LOCAL_LLM_URL is not set: the offline model runs in its own process, which "
                "`python -m pai_local` starts and supervises (or point it at a llama-cpp-python server)"
            )
        return local_server_chat_model(
            url=self.settings.local_llm_url,
            model_path=self.settings.resolve_local_llm_path(),
            context_tokens=self.settings.llm_context_tokens,
            timeout_seconds=self.settings.llm_timeout_seconds,
            max_attempts=self.settings.llm_max_attempts,
        )

    def _openai_api_key(self) -> str:
        """From Secrets Manager when a secret is named (the deployed stack), else the setting;
        endpoints such as a local llama.cpp server take any key."""
        if self.settings.openai_api_key_secret:
            with translated_aws_errors("Secrets Manager"):
                secret = self.client("secretsmanager").get_secret_value(SecretId=self.settings.openai_api_key_secret)
            return str(secret["SecretString"])
        return self.settings.openai_api_key or "no-key"

    @cached_property
    def chat(self) -> ChatService:
        return ChatService(
            self.conversation_repository,
            self.memories,
            self.chat_model,
            self.clock,
            history_max_turns=self.settings.history_max_turns,
            max_output_tokens=self.settings.llm_max_output_tokens,
            limits=self.limits,
            retrieval=self.retrieval,
            learning=self.learning if self.settings.learn_from_chat else None,
            learning_queue=self.learning_queue,
            metrics=self.metrics,
        )

    @cached_property
    def learning_queue(self) -> SqsLearningQueue | None:
        """Where the chat function sends turns to learn from; None: none is configured."""
        if not self.settings.learning_queue_url:
            return None
        return SqsLearningQueue(self.client("sqs"), self.settings.learning_queue_url)

    @cached_property
    def learning(self) -> LearningService:
        mode = next(m for m in EXTRACTION_MODES if m == self.settings.learning_mode)
        model = None
        if mode == "model":
            model = self.chat_model
            if not hasattr(model, "complete_structured"):
                raise ConfigError("PAI_LEARNING_EXTRACTION=model needs a provider with structured output")
        return LearningService(
            self.memories,
            self.conversation_repository,
            self.clock,
            mode=mode,
            model=model,  # type: ignore[arg-type]
            limits=self.limits,
            markers=DynamoUsageCounters(self.dynamodb, self.settings.usage_table),
            metrics=self.metrics,
        )

    @cached_property
    def limits(self) -> UsageLimits:
        """Per-user request rate and daily model tokens, counted in the usage table."""
        return UsageLimits(
            DynamoUsageCounters(self.dynamodb, self.settings.usage_table),
            self.clock,
            requests_per_minute=self.settings.rate_limit_per_minute,
            daily_token_budget=self.settings.daily_token_budget,
        )

    @cached_property
    def account(self) -> AccountService:
        return AccountService(
            self.memory_repository,
            self.conversation_repository,
            self.keyring,
            snapshots=self.snapshot_store,
            credentials=self.api_keys,
            generations=self.change_log,
            on_forgotten=self._drop_from_search_index,
            documents=self.documents if self.settings.knowledge_bucket else None,
        )

    def _drop_from_search_index(self, owner: str) -> None:
        # Only an index this container has built holds the user; building one to empty it would load the model.
        index = self.__dict__.get("search_index")
        if isinstance(index, LiveMemoryIndex):
            index.forget_owner(owner)

    @cached_property
    def idempotency(self) -> IdempotentRequests:
        """Idempotency-Key records in their own table, through Powertools' DynamoDB layer on our
        client (the emulator's endpoint locally, the request's deadline on every call)."""
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        persistence = DynamoDBPersistenceLayer(table_name=self.settings.idempotency_table, boto3_client=self.dynamodb)
        return IdempotentRequests(persistence, self.cipher, table=self.settings.idempotency_table)

    @cached_property
    def api_keys(self) -> ApiKeys:
        """Checked keys are remembered for PAI_AUTH_CACHE_SECONDS in this container: API Gateway's own
        cache is off, since it would keep an "unavailable" answer as long as a good one."""
        seconds = self.settings.auth_cache_seconds
        known = KnownKeys(max_age_seconds=seconds) if seconds > 0 else None
        return ApiKeys(DynamoApiKeyStore(self.dynamodb, self.settings.api_keys_table), self.clock, known=known)

    @cached_property
    def storage_probe(self) -> DynamoStorageProbe:
        return DynamoStorageProbe(self.dynamodb, [self.settings.knowledge_table, self.settings.conversations_table])


def single_threaded_blas() -> None:
    """Exact search is one float32 matrix-vector product. A Lambda has about one vCPU, and a
    multi-threaded BLAS product that has to wait for a descheduled thread measured 8 ms instead of
    0.17 ms (10K x 384, 2 busy cores); on one thread it is never slower than that. Process-wide,
    once: numpy's BLAS serves nothing else that is large here."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


_container: Container | None = None
_lock = threading.Lock()


def get_container() -> Container:
    """The process-wide container, built from the environment on first use (a Lambda cold start)."""
    global _container  # noqa: PLW0603
    with _lock:
        if _container is None:
            _container = Container(Settings.from_env())
        return _container


def set_container(container: Container | None) -> None:
    """Install a container built elsewhere (the local harness, tests); None resets."""
    global _container  # noqa: PLW0603
    with _lock:
        _container = container
