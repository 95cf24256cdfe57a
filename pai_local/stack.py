"""Bring the whole local PAI up: emulator (embedded moto unless one is given), resources from the
template, the composition root pointed at the emulator, and the gateway in front of the handlers."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import boto3

from pai_core.auth import ApiKeys
from pai_core.bootstrap import Container, set_container
from pai_core.config import REPO_ROOT, Settings
from pai_core.errors import Conflict, InvalidInput
from pai_core.ports import ChatModel
from pai_local.emulator import EmbeddedMoto, free_port, use_emulator_credentials
from pai_local.function_url import LocalFunctionUrl
from pai_local.functions import Functions, InlineFunctions, ProcessFunctions, functions_from_template
from pai_local.gateway import LocalGateway
from pai_local.model_server import DEFAULT_LOG_FILE, ModelServer
from pai_local.provision import Provisioned, provision
from pai_local.queues import QueuePoller, sqs_mappings
from pai_local.template import Template
from pai_local.web import WebApp


@dataclass
class RunningStack:
    settings: Settings
    container: Container
    resources: Provisioned
    gateway: LocalGateway
    gateway_url: str
    endpoint_url: str
    emulator: EmbeddedMoto | None
    model_server: ModelServer | None = None
    queue_poller: QueuePoller | None = None
    # The streamed chat's Function URL (pai_local.function_url): what clients post streamed chats to,
    # `${stream_url}/chat`; None when the stack was started without one.
    function_url: LocalFunctionUrl | None = None
    # Inline: this process's handlers serve from `container` (set_container). Process mode leaves
    # the process-wide container alone: the workers build their own.
    installed: bool = True

    @property
    def stream_url(self) -> str | None:
        return self.function_url.url if self.function_url is not None else None

    def stop(self) -> None:
        if self.function_url is not None:
            self.function_url.stop()
        if self.queue_poller is not None:
            self.queue_poller.stop()
        self.gateway.stop()
        if self.installed:
            set_container(None)
        if self.model_server is not None:
            self.model_server.stop()
        if self.emulator is not None:
            self.emulator.stop()


def start_stack(
    settings: Settings,
    *,
    emulator_port: int,
    gateway_port: int,
    gateway_host: str = "127.0.0.1",
    chat_model: ChatModel | None = None,
    state_dir: Path | None = None,
    execution: Literal["inline", "process"] = "inline",
    function_timeouts: Mapping[str, float] | None = None,
    model_server_log: Path = DEFAULT_LOG_FILE,
    web_chat_stream_url: str | None = None,
    stream_port: int | None = None,
) -> RunningStack:
    """Uses settings.endpoint_url when it is set (LocalStack, a moto container, anything that speaks
    AWS), else starts moto in this process on `emulator_port`, keeping its state in `state_dir`
    (None: in memory only). The `local` chat model is served by a supervised child process
    (pai_local.model_server), unless a chat model is given or settings.local_llm_url names a server
    already running.

    execution="process" runs each function as Lambda does (pai_local.functions.ProcessFunctions:
    worker processes, up to settings.local_concurrency per function, each stopped past the
    function's timeout; `function_timeouts`, by function name, replaces the template's). "inline"
    runs the handlers in this process, one at a time, with this process's composition root: what a
    test needs to hand them a `chat_model` of its own or to swap the container (set_container).

    The gateway also serves the web app (pai_local.web) at `/`; its config.json sends streamed chat
    to `web_chat_stream_url` when one is given, else to the Function URL when there is one, else to
    the gateway.

    `stream_port` (0: a free one) also serves the streamed chat's Function URL there, with the same
    execution (pai_local.function_url); None: no Function URL."""
    if execution == "process" and chat_model is not None:
        raise ValueError("a chat model object cannot reach worker processes: use execution='inline'")
    use_emulator_credentials()
    emulator = None
    endpoint_url = settings.endpoint_url
    if endpoint_url is None:
        emulator = EmbeddedMoto(port=emulator_port, state_dir=state_dir)
        endpoint_url = emulator.start()
    model_server = None
    try:
        if chat_model is None and settings.llm_provider == "local" and settings.local_llm_url is None:
            # Loads the model while the emulator is provisioned; waited for below.
            model_server = ModelServer.for_settings(settings, port=free_port(), log_path=model_server_log)
            model_server.start()
            settings = replace(settings, local_llm_url=model_server.url)
        session = boto3.session.Session(region_name=settings.region)
        resources = provision(Template.load(Env=settings.env), session, endpoint_url=endpoint_url)
        template = Template.load(Env=settings.env)
        mappings = sqs_mappings(template)
        # The queue the chat function sends turns to learn from: the one the learning function is mapped to.
        learning_queue = next((resources.queues[m.queue_id] for m in mappings if m.handler == LEARNING_HANDLER), None)
        # The queue the documents function sends large uploads to: the one the ingest function is mapped to.
        documents_queue = next((resources.queues[m.queue_id] for m in mappings if m.handler == INGEST_HANDLER), None)
        settings = replace(
            settings,
            endpoint_url=endpoint_url,
            knowledge_bucket=resources.bucket,
            learning_queue_url=settings.learning_queue_url or learning_queue,
            documents_queue_url=settings.documents_queue_url or documents_queue,
        )
        container = Container(settings, chat_model=chat_model)
        if execution == "inline":
            set_container(container)
        if model_server is not None:
            model_server.wait_ready()
        functions: Functions = InlineFunctions()
        if execution == "process":
            specs = functions_from_template(template, timeouts=function_timeouts)
            functions = ProcessFunctions(settings, specs, max_workers=settings.local_concurrency)
        web = WebApp(chat_stream_url=web_chat_stream_url)
        gateway = LocalGateway(template.routes(), host=gateway_host, port=gateway_port, functions=functions, web=web)
        try:
            gateway_url = gateway.start()
        except BaseException:
            gateway.stop()
            raise
        # The learning and ingest functions' queues, polled as their event source mappings would be.
        poller = QueuePoller(
            mappings,
            resources.queues,
            session.client("sqs", endpoint_url=endpoint_url),
            functions,
            region=settings.region,
        )
        poller.start()
        function_url = _function_url(
            template,
            settings,
            stream_port,
            host=gateway_host,
            execution=execution,
            origin=gateway_url,
            undo=(poller.stop, gateway.stop),
        )
        if web_chat_stream_url is None and function_url is not None:
            web.use_chat_stream_url(function_url.url)
    except BaseException:
        if model_server is not None:
            model_server.stop()
        if emulator is not None:
            emulator.stop()
        raise
    return RunningStack(
        settings,
        container,
        resources,
        gateway,
        gateway_url,
        endpoint_url,
        emulator,
        model_server,
        queue_poller=poller,
        installed=execution == "inline",
        function_url=function_url,
    )


def _function_url(
    template: Template,
    settings: Settings,
    port: int | None,
    *,
    host: str,
    execution: Literal["inline", "process"],
    origin: str,
    undo: tuple[Callable[[], None], ...],
) -> LocalFunctionUrl | None:
    """The streamed chat's Function URL on `port`, its CORS allowing the local web app at `origin`
    (wherever PAI_PORT puts it); when it cannot start, `undo` stops what was started before it."""
    if port is None:
        return None
    function_url = LocalFunctionUrl(
        template, settings, host=host, port=port, execution=execution, extra_origins=(origin,)
    )
    try:
        function_url.start()
    except BaseException:
        for step in undo:
            step()
        raise
    return function_url


LEARNING_HANDLER = "handlers.learning.handler"
INGEST_HANDLER = "handlers.document_ingest.handler"
# .pai/ is git-ignored.
LOCAL_API_KEY_FILE = REPO_ROOT / ".pai" / "api-key"
LOCAL_API_KEY_LABEL = "make run"


@dataclass(frozen=True)
class LocalApiKey:
    key: str = field(repr=False)
    user_id: str
    path: Path
    created: bool  # False: the saved key, registered again


def ensure_local_api_key(api_keys: ApiKeys, user_id: str, path: Path = LOCAL_API_KEY_FILE) -> LocalApiKey:
    """The local user's API key. The one saved at `path` when there is one: its digest is registered
    again, for an emulator that starts empty (--fresh, a new state directory); against one that
    remembers, registering finds the stored record as it is, revoked or not, and never reactivates
    it. Otherwise, or when the saved key is revoked or another user's, a new key, saved at `path`
    readable by its owner only."""
    saved = _read_private(path)
    if saved is not None:
        try:
            info = api_keys.register(saved, user_id, label=LOCAL_API_KEY_LABEL)
        except (InvalidInput, Conflict):
            info = None
        if info is not None and not info.revoked:
            return LocalApiKey(saved, user_id, path, created=False)
    issued = api_keys.issue(user_id, label=LOCAL_API_KEY_LABEL)
    _write_private(path, issued.key)
    return LocalApiKey(issued.key, user_id, path, created=True)


def _read_private(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    os.chmod(path, 0o600)  # a copy made with looser permissions is tightened
    return text or None


def _write_private(path: Path, key: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key + "\n")
    os.chmod(partial, 0o600)  # O_CREAT's mode does not apply to a file that was already there
    os.replace(partial, path)
