"""Integration fixtures: one PAI stack per session (emulator, provisioned resources, the real
handlers behind the local gateway, the real offline chat model in its supervised server), reached
over HTTP on loopback.

AWS_EMULATOR picks the AWS emulator:
  auto (default)  LocalStack in Docker when a Docker engine answers, else embedded moto
  moto            moto's server in this process, on a free loopback port
  localstack      the pinned LocalStack image via testcontainers; skips, saying why, without Docker
  external        whatever AWS_ENDPOINT_URL points at (LocalStack, a moto server, ...)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.adapters.llm_local import local_server_chat_model
from pai_core.bootstrap import Container, set_container
from pai_core.config import Settings
from pai_local.emulator import endpoint_answers, free_port
from pai_local.model_server import ModelServer
from pai_local.stack import RunningStack, start_stack
from tests.integration.support import (
    REGION,
    ApiClient,
    Emulator,
    RecordingChatModel,
    docker_problem,
    localstack_endpoint,
    new_env,
)

EMULATOR_CHOICES = ("auto", "moto", "localstack", "external")
SESSION_CONTEXT_TOKENS = 2048


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    choice = (os.environ.get("AWS_EMULATOR") or "auto").strip().lower()
    if choice not in EMULATOR_CHOICES:
        pytest.fail(f"AWS_EMULATOR must be one of {', '.join(EMULATOR_CHOICES)}, got {choice!r}", pytrace=False)
    if choice == "moto":
        yield Emulator("moto", None)
        return
    if choice == "external":
        url = os.environ.get("AWS_ENDPOINT_URL")
        if not url:
            pytest.fail("AWS_EMULATOR=external needs AWS_ENDPOINT_URL (the emulator's URL)", pytrace=False)
        if not endpoint_answers(url):
            pytest.skip(f"AWS_EMULATOR=external: nothing answers at AWS_ENDPOINT_URL={url}")
        yield Emulator("external", url)
        return
    problem = docker_problem()
    if problem is not None:
        if choice == "localstack":
            pytest.skip(f"AWS_EMULATOR=localstack: no Docker engine answers: {problem}")
        yield Emulator("moto", None)
        return
    with contextlib.ExitStack() as running:
        try:
            url = running.enter_context(localstack_endpoint())
        except Exception as exc:
            if choice == "localstack":
                raise
            # auto: Docker answers but LocalStack would not start (no image offline, ...): use moto.
            warnings.warn(f"LocalStack did not start ({exc!r}); using embedded moto", stacklevel=1)
            yield Emulator("moto", None)
            return
        yield Emulator("localstack", url)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """The offline model as `make run` serves it: llama.cpp in a supervised child process, so no
    test runs llama.cpp's compute in the pytest process (where a crash would end the whole run)."""
    # One thread: llama.cpp's threads spin while they wait for each other, and on a machine as busy
    # as a test run's, two of them make a reply tens of times slower than one.
    settings = Settings.from_env(llm_context_tokens=SESSION_CONTEXT_TOKENS, llm_threads=1)
    log = tmp_path_factory.mktemp("model-server") / "model-server.log"
    server = ModelServer.for_settings(settings, port=free_port(), log_path=log)
    with server.serving():
        yield server


@pytest.fixture(scope="session")
def chat_model(model_server: ModelServer) -> RecordingChatModel:
    model = local_server_chat_model(
        url=model_server.url,
        model_path=model_server.command.model_path,
        context_tokens=SESSION_CONTEXT_TOKENS,
        # As long as the chat function's 30 s allow (a model call is only started when it fits):
        # two cores are shared with everything else the suite runs.
        timeout_seconds=25,
        max_attempts=2,
    )
    return RecordingChatModel(model)


@pytest.fixture(scope="session")
def stack(emulator: Emulator, chat_model: RecordingChatModel, model_server: ModelServer) -> Iterator[RunningStack]:
    settings = Settings(
        env=new_env(),
        region=REGION,
        endpoint_url=emulator.endpoint_url,
        # A container built from these settings (tests that install their own) reaches the same server.
        local_llm_url=model_server.url,
        llm_context_tokens=SESSION_CONTEXT_TOKENS,
        llm_threads=1,
        # One user sends hundreds of requests a minute here: limits far above that keep every
        # request counted in the real usage table without ever refusing one (test_limits.py
        # installs small ones where it means to).
        rate_limit_per_minute=1_000_000,
        daily_token_budget=10**12,
    )
    running = start_stack(
        settings, emulator_port=free_port(), gateway_port=free_port(), chat_model=chat_model, stream_port=0
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def api(stack: RunningStack) -> ApiClient:
    """Authenticated as the stack's owner (settings.owner), whose storage the tests read directly."""
    issued = stack.container.api_keys.issue(stack.settings.owner, "integration tests")
    return ApiClient(stack.gateway_url, api_key=issued.key)


@pytest.fixture(scope="session")
def stream_api(stack: RunningStack, api: ApiClient) -> ApiClient:
    """The same user on the stack's streamed chat Function URL (POST /chat only), which streams."""
    assert stack.stream_url is not None
    return ApiClient(stack.stream_url, api_key=api.api_key)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server of its own for a test module (the deploy round trips): they cannot disturb the session's stack."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws(stack: RunningStack) -> Callable[[str], Any]:
    """Plain boto3 clients on the emulator, for looking at (and tampering with) raw storage."""
    session = boto3.session.Session(region_name=stack.settings.region)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=stack.endpoint_url)  # type: ignore[call-overload]

    return client


@pytest.fixture(scope="session")
def conversations(stack: RunningStack) -> DynamoConversationRepository:
    """The conversation repository exactly as the composition root builds it."""
    settings = stack.settings
    return DynamoConversationRepository(
        stack.container.dynamodb,
        settings.conversations_table,
        stack.container.cipher,
        context_name=f"pai-conversations-{settings.env}",
        ttl_seconds=settings.conversation_ttl_seconds,
    )


@pytest.fixture
def installed(stack: RunningStack) -> Iterator[Callable[[Container], None]]:
    """Lets a test serve requests from another composition root; the session's comes back after."""

    def install(container: Container) -> None:
        set_container(container)

    try:
        yield install
    finally:
        set_container(stack.container)
