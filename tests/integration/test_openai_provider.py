"""The OpenAI-compatible provider against a real OpenAI-compatible server on loopback:
llama-cpp-python's own server serving the same SmolLM2 GGUF as the offline provider."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx2
import openai
import pytest

from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.adapters.llm_openai import OpenAiChatModel
from pai_core.bootstrap import Container
from pai_core.config import Settings
from pai_core.errors import UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta
from pai_local.emulator import free_port
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient

pytestmark = pytest.mark.integration
MODEL_ALIAS = "smollm2-local"
MESSAGES = [ChatMessage(role="system", content="You are helpful."), ChatMessage(role="user", content="Name a colour.")]


class ModelServer:
    def __init__(self) -> None:
        self.port = free_port()
        gguf = Settings.from_env({}).resolve_local_llm_path()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("llama-cpp-python's server did not start") from None
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    running = ModelServer()
    yield running
    running.stop()


def model_for(url: str, **options: object) -> OpenAiChatModel:
    settings: dict[str, object] = {"timeout_seconds": 30, "max_attempts": 2, **options}
    return OpenAiChatModel(base_url=url, api_key="any", model=MODEL_ALIAS, context_tokens=2048, **settings)  # type: ignore[arg-type]


def test_plain_reply_with_usage(server: ModelServer) -> None:
    completion = model_for(server.url).complete(MESSAGES, max_tokens=24)
    assert completion.text
    assert completion.model == MODEL_ALIAS
    assert completion.usage.input_tokens > 5
    assert 0 < completion.usage.output_tokens <= 24


def test_streamed_reply_adds_up_to_the_completion(server: ModelServer) -> None:
    items = list(model_for(server.url).stream(MESSAGES, max_tokens=24))
    deltas = [item for item in items if isinstance(item, TextDelta)]
    final = items[-1]
    assert isinstance(final, Completion)
    # How many pieces depends on the model's words; that each is at least one token does not.
    assert 1 <= len(deltas) <= final.usage.output_tokens
    assert "".join(d.text for d in deltas).strip() == final.text


class CountingTransport(httpx2.HTTPTransport):
    """The openai client's own HTTP transport (httpx2), counting the requests it is asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        return super().handle_request(request)


def test_nothing_listening_is_unavailable_after_the_configured_attempts() -> None:
    """Bounded by attempts, not measured by a stopwatch: a refused connection is retried exactly up to
    max_attempts, then it is a 503's UpstreamUnavailable."""
    transport = CountingTransport()
    model = model_for(
        f"http://127.0.0.1:{free_port()}/v1", max_attempts=2, http_client=httpx2.Client(transport=transport)
    )
    with pytest.raises(UpstreamUnavailable) as raised:
        model.complete(MESSAGES, max_tokens=8)
    assert transport.sent == 2
    assert isinstance(raised.value.__cause__, openai.APIConnectionError), repr(raised.value.__cause__)


def test_server_stopped_mid_stream_stores_no_reply(
    stack: RunningStack, installed: Callable[[Container], None], conversations: DynamoConversationRepository
) -> None:
    dying = ModelServer()
    try:
        container = Container(
            replace(
                stack.settings,
                llm_provider="openai",
                openai_base_url=dying.url,
                openai_model=MODEL_ALIAS,
                llm_context_tokens=2048,
                llm_max_attempts=1,
            )
        )
        session = f"openai-dies-{time.time_ns()}"
        stream = container.chat.chat_stream(
            stack.settings.owner,
            message="Tell me a long story about the sea.",
            session_id=session,
            use_memory=False,
            top_k=0,
        )
        assert isinstance(next(stream), TextDelta)
        dying.stop()
        with pytest.raises(UpstreamUnavailable):
            for _ in stream:
                pass
    finally:
        dying.stop()
    turns = conversations.recent(stack.settings.owner, session, now=datetime.now(UTC), limit=10)
    assert [turn.role for turn in turns] == ["user"]


def test_chat_over_http_through_the_openai_provider(
    server: ModelServer,
    stack: RunningStack,
    api: ApiClient,
    stream_api: ApiClient,
    installed: Callable[[Container], None],
) -> None:
    installed(
        Container(
            replace(
                stack.settings,
                llm_provider="openai",
                openai_base_url=server.url,
                openai_model=MODEL_ALIAS,
                llm_context_tokens=2048,
            )
        )
    )
    result = api.post("/chat", {"message": "Say hello.", "useMemory": False})
    assert result.status == 200, result
    assert result.json["model"] == MODEL_ALIAS
    assert result.json["reply"]
    assert result.json["usage"]["outputTokens"] > 0
    body = json.dumps({"message": "Say hi.", "stream": True, "useMemory": False}).encode()
    # The streamed chat's Function URL writes events as they come (the API buffers, as in AWS).
    streamed = stream_api.request("POST", "/chat", body=body)
    assert streamed.status == 200
    assert streamed.headers["content-type"] == "text/event-stream"
    assert streamed.headers["transfer-encoding"] == "chunked"  # written as produced, not buffered


def test_the_api_key_comes_from_secrets_manager(stack: RunningStack, aws: Callable[[str], object]) -> None:
    secrets = aws("secretsmanager")
    arn = secrets.create_secret(Name=f"pai-openai-key-{time.time_ns()}", SecretString="sk-test-from-secret")["ARN"]  # type: ignore[attr-defined]
    container = Container(replace(stack.settings, llm_provider="openai", openai_api_key_secret=arn))
    assert container._openai_api_key() == "sk-test-from-secret"
    assert "sk-test" not in repr(replace(stack.settings, openai_api_key="sk-test-plain"))
