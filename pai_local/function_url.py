"""The streamed chat's Function URL, on loopback: what `make run` serves besides the HTTP API.

In AWS, POST /chat with `"stream": true` streams only through ChatStreamFunctionUrl
(infra/template.yaml): the Lambda Web Adapter proxies each invocation to the shipped HTTP adapter
(handlers/chat_stream_server.py) inside the function. Here the same adapter serves on its own port,
with what the Function URL adds in front of it taken from the template: its CORS configuration. The
HTTP API on the gateway buffers a streamed chat, as API Gateway does.

Like the gateway's functions, the adapter runs either in a process of its own (`make run`: an
execution environment with its own composition root) or in a thread of this process, sharing its
composition root (tests that hand the stack a chat model of their own).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from handlers.chat_stream_server import ChatStreamApp, ChatStreamServer, CorsPolicy
from pai_core.config import Settings
from pai_local.functions import START_METHOD, WORKER_BOOT_SECONDS, OneInvocationAtATime
from pai_local.logs import configure_console_logging
from pai_local.template import Template

log = logging.getLogger("pai_local.function_url")
URL_RESOURCE = "ChatStreamFunctionUrl"
FUNCTION_RESOURCE = "ChatStreamFunction"


def cors_from_template(template: Template, *, extra_origins: tuple[str, ...] = ()) -> CorsPolicy:
    """The Function URL's Cors, with the parameters' defaults (an empty WebAppOrigin adds nothing).
    An origin naming a resource the local stack has no counterpart of (the web app's CloudFront
    distribution) is left out: locally the page is the gateway's, which `extra_origins` names."""
    cors = template.properties(URL_RESOURCE)["Cors"]
    origins = [template.chosen(origin) for origin in cors["AllowOrigins"]]
    allowed: list[str] = []
    for origin in origins:
        if origin == {"Ref": "AWS::NoValue"}:
            continue
        try:
            allowed.append(str(template.resolve(origin)))
        except KeyError:
            log.debug("no local counterpart of the allowed origin %s", origin)
    return CorsPolicy(
        allow_origins=tuple(dict.fromkeys((*allowed, *extra_origins))),
        allow_headers=tuple(cors.get("AllowHeaders", ())),
        allow_methods=tuple(cors.get("AllowMethods", ("POST",))),
        max_age=int(cors.get("MaxAge", 0)),
    )


def _app_settings(template: Template) -> dict[str, Any]:
    function = template.properties(FUNCTION_RESOURCE)
    return {
        "timeout_seconds": float(template.resolve(function.get("Timeout", 3))),
        "function_name": "chat-stream",
    }


@dataclass(frozen=True)
class _Boot:
    settings: Settings
    host: str
    port: int
    cors: CorsPolicy
    app: dict[str, Any]


def _serve_in_process(conn: Connection, boot: _Boot) -> None:
    """One execution environment: its own composition root, then the adapter's server."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack stops it
    configure_console_logging()
    try:
        from pai_core.bootstrap import Container, set_container

        set_container(Container(boot.settings))
        server = ChatStreamServer(ChatStreamApp(**boot.app), host=boot.host, port=boot.port, cors=boot.cors)
    except Exception as exc:
        log.exception("the streamed chat's Function URL could not start")
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", server.url))
    server.serve_forever()


class LocalFunctionUrl:
    def __init__(
        self,
        template: Template,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        execution: Literal["inline", "process"] = "inline",
        extra_origins: tuple[str, ...] = (),
    ) -> None:
        self._settings = settings
        self._host, self._port = host, port
        self._execution = execution
        self._cors = cors_from_template(template, extra_origins=extra_origins)
        self._app_settings = _app_settings(template)
        self._server: ChatStreamServer | None = None
        self._stopping: Any = None
        self._process: BaseProcess | None = None
        self.url = ""

    def start(self) -> str:
        if self._execution == "inline":
            # One invocation at a time with the gateway's inline functions: they share Powertools' state.
            app = ChatStreamApp(invocation_guard=OneInvocationAtATime, **self._app_settings)
            self._server = ChatStreamServer(app, host=self._host, port=self._port, cors=self._cors)
            self._stopping = self._server.running()
            self.url = self._stopping.__enter__()
            return self.url
        context: Any = multiprocessing.get_context(START_METHOD)  # a spawn context: its Process and Pipe
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_serve_in_process,
            args=(sender, _Boot(self._settings, self._host, self._port, self._cors, self._app_settings)),
            name="pai-chat-stream",
            daemon=True,
        )
        process.start()
        sender.close()
        self._process = process
        if not receiver.poll(WORKER_BOOT_SECONDS):
            self.stop()
            raise RuntimeError("the streamed chat's Function URL did not start in time")
        try:
            state, detail = receiver.recv()
        except EOFError:
            state, detail = "failed", "its process ended"
        if state != "ready":
            self.stop()
            raise RuntimeError(f"the streamed chat's Function URL cannot start: {detail}")
        self.url = str(detail)
        return self.url

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.__exit__(None, None, None)
            self._stopping = None
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None
