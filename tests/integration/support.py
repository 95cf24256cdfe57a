"""Helpers for the integration suite: a small HTTP client (stdlib only), a chat model that records
what it is asked, the emulator backends, and readers of raw storage."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from pai_core.config import REPO_ROOT
from pai_core.errors import UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta, Usage
from pai_core.ports import ChatModel
from pai_local.stack import RunningStack

# Pinned, so a run today and a run next year talk to the same emulator.
LOCALSTACK_IMAGE = "localstack/localstack:4.4.0"
LOCALSTACK_SERVICES = ("dynamodb", "kms", "s3", "sts", "sqs")
LOCALSTACK_EDGE_PORT = 4566
REGION = "us-east-1"

INTERNAL_ERROR_BODY = {"error": {"code": "internal_error", "message": "Something went wrong on our side."}}


# -- HTTP --------------------------------------------------------------------------------------------


class HttpResult(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    json: Any  # the parsed body; the text when it is not JSON; None when empty


class ApiClient:
    """POSTs JSON to the local gateway and never raises on an error status. With an `api_key`, every
    request carries `Authorization: Bearer <api_key>` unless it sets that header itself."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._timeout = timeout
        # Loopback only: ignore any proxy the environment configures.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpResult:
        sent = dict(headers or {})
        if self.api_key is not None and not any(name.lower() == "authorization" for name in sent):
            sent["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=sent)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return _result(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:  # 4xx and 5xx: an answer like any other here
            try:
                return _result(error.code, dict(error.headers.items()), error.read())
            finally:
                error.close()

    def post(self, path: str, payload: object, *, headers: Mapping[str, str] | None = None) -> HttpResult:
        """`payload` is sent as JSON; bytes are sent as they are (for malformed bodies)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        return self.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})

    def with_key(self, api_key: str | None) -> ApiClient:
        """The same gateway, as another key's user (None: no Authorization header at all)."""
        return ApiClient(self.base_url, api_key=api_key, timeout=self._timeout)

    def get(self, path: str) -> HttpResult:
        return self.request("GET", path)


def _result(status: int, headers: dict[str, str], raw: bytes) -> HttpResult:
    lowered = {name.lower(): value for name, value in headers.items()}
    if not raw:
        return HttpResult(status, lowered, None)
    text = raw.decode("utf-8")
    try:
        return HttpResult(status, lowered, json.loads(text))
    except ValueError:
        return HttpResult(status, lowered, text)


# -- the chat model ----------------------------------------------------------------------------------


class RecordingChatModel:
    """The real model, with every message list it is asked to complete kept for inspection.

    `fail_next()` makes the next completions fail the way LlamaCppChatModel reports a llama.cpp
    failure (UpstreamUnavailable), after the prompt has been recorded. `answering()` makes the next
    completions answer given texts instead of the model (the prompt is recorded all the same), for
    tests of what PAI does with a reply (history, storage, streaming) rather than of the model's words."""

    def __init__(self, inner: ChatModel) -> None:
        self._inner = inner
        self.name = inner.name
        self.context_tokens = inner.context_tokens
        self.prompts: list[list[ChatMessage]] = []
        self._failures_left = 0
        self._scripted: list[str] = []
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def _record(self, messages: Sequence[ChatMessage]) -> str | None:
        """Records the prompt; the scripted answer to give, if one is due."""
        with self._lock:
            self.prompts.append(list(messages))
            fail = self._failures_left > 0
            if fail:
                self._failures_left -= 1
            scripted = self._scripted.pop(0) if self._scripted and not fail else None
        if fail:
            raise UpstreamUnavailable("the local model failed to answer")
        return scripted

    def _scripted_completion(self, messages: Sequence[ChatMessage], text: str) -> Completion:
        usage = Usage(
            input_tokens=sum(self._inner.count_tokens(message.content) for message in messages),
            output_tokens=max(1, self._inner.count_tokens(text)),
        )
        return Completion(text=text, model=self.name, usage=usage)

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        scripted = self._record(messages)
        if scripted is not None:
            return self._scripted_completion(messages, scripted)
        return self._inner.complete(messages, max_tokens=max_tokens)

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        scripted = self._record(messages)
        if scripted is None:
            yield from self._inner.stream(messages, max_tokens=max_tokens)
            return
        for piece in scripted_pieces(scripted):
            yield TextDelta(piece)
        yield self._scripted_completion(messages, scripted)

    def fail_next(self, times: int = 1) -> None:
        with self._lock:
            self._failures_left = times

    @contextmanager
    def answering(self, *replies: str) -> Iterator[None]:
        """Inside the block, the next completions answer `replies`, in order, instead of the model;
        any left unused are dropped when it ends, so they cannot answer another test's chat."""
        with self._lock:
            self._scripted = list(replies)
        try:
            yield
        finally:
            with self._lock:
                self._scripted = []

    @property
    def last_prompt(self) -> list[ChatMessage]:
        with self._lock:
            assert self.prompts, "the model has not been asked anything yet"
            return self.prompts[-1]

    def prompt_count(self) -> int:
        with self._lock:
            return len(self.prompts)


def scripted_pieces(reply: str) -> list[str]:
    """How a scripted reply is streamed: word by word, each piece with the space before it."""
    return re.findall(r"\s*\S+", reply)


def prompt_text(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(f"[{message.role}] {message.content}" for message in messages)


# -- emulator backends -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emulator:
    kind: str  # "moto", "localstack" or "external"
    endpoint_url: str | None  # None: start_stack runs moto in this process


def new_env(prefix: str = "it") -> str:
    """A fresh environment name, so a run's tables, key alias and bucket are its own."""
    return f"{prefix}{secrets.token_hex(4)}"


def docker_problem() -> str | None:
    """None when a Docker engine answers a ping, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # no SDK, no socket, no permission, no engine: all mean "no Docker"
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def localstack_endpoint() -> Iterator[str]:
    """Starts the pinned LocalStack image and yields its endpoint URL. The caller has checked
    `docker_problem()` first."""
    try:
        from testcontainers.community.localstack import LocalStackContainer
    except ImportError:  # older testcontainers releases
        from testcontainers.localstack import LocalStackContainer

    container = LocalStackContainer(image=LOCALSTACK_IMAGE, region_name=REGION).with_services(*LOCALSTACK_SERVICES)
    token = os.environ.get("LOCALSTACK_AUTH_TOKEN")
    if token:
        container.with_env("LOCALSTACK_AUTH_TOKEN", token)
    if not os.environ.get("DOCKER_HOST", "").startswith(("tcp://", "ssh://")):
        # A local engine: publish the edge port on loopback only.
        # docker-py takes (host ip, host port); None picks a free port.
        container.ports[str(LOCALSTACK_EDGE_PORT)] = ("127.0.0.1", None)  # type: ignore[assignment]
    container.start(timeout=180)
    try:
        yield str(container.get_url()).replace("://localhost:", "://127.0.0.1:")
    finally:
        container.stop()


# -- raw storage -------------------------------------------------------------------------------------


def scan_all(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page.get("Items", []))
    return items


def find_plaintext(value: object, needles: Sequence[str], where: str = "") -> list[str]:
    """Every place in `value` (a raw DynamoDB item, an S3 body, ...) where one of `needles` shows:
    in strings (any case), in bytes (UTF-8, UTF-16), and in attribute names."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, inner in value.items():
            found += find_plaintext(key, needles, f"{where}/<name>")
            found += find_plaintext(inner, needles, f"{where}/{key}")
    elif isinstance(value, list | tuple | set | frozenset):
        for index, inner in enumerate(value):
            found += find_plaintext(inner, needles, f"{where}[{index}]")
    elif isinstance(value, str):
        found += [f"{where}: {needle!r}" for needle in needles if needle.casefold() in value.casefold()]
    elif isinstance(value, bytes | bytearray):
        for needle in needles:
            encodings = (needle.encode("utf-8"), needle.encode("utf-16-le"), needle.encode("utf-16-be"))
            if any(encoded in value for encoded in encodings):
                found.append(f"{where}: {needle!r} (bytes)")
    return found


def run_script(
    stack: RunningStack,
    script: str,
    command: str,
    *args: str,
    environment: Mapping[str, str | None] | None = None,
    env_name: str | None = None,
    endpoint_url: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python scripts/<script> <command> --env ... --endpoint-url ... <args>` against the stack's
    emulator, as an operator runs it. `environment` changes the script's environment (None removes
    a variable); `env_name` and `endpoint_url` replace the stack's."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": stack.settings.region,
    }
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    common = ["--env", env_name or stack.settings.env, "--endpoint-url", endpoint_url or stack.endpoint_url]
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), command, *common, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def run_benchmark(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks.<module> <args>` from the repository, offline, as `make bench` runs it;
    the output is captured and the exit status left for the test to check."""
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
