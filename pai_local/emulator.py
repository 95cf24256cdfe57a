"""The embedded AWS emulator: moto's server mode, in this process, on a loopback port, and (given a
state directory) kept on disk across restarts.

We serve moto's WSGI application ourselves, behind a middleware that runs one request at a time and
notes the ones that can change state; a saver thread snapshots the backends (pai_local.state) at most
once per SAVE_INTERVAL_SECONDS while there are unsaved changes, and once more on a clean stop."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from pai_local import state

EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
DEFAULT_EMULATOR_PORT = 4566  # the port LocalStack uses, so tools pointed at one find the other
SAVE_INTERVAL_SECONDS = 1.0
# A write acknowledged this long before the process dies is on disk: the saver starts a snapshot at
# most SAVE_INTERVAL_SECONDS after the write, and one snapshot of a personal-sized state takes a
# fraction of a second. A state so large that a snapshot takes longer stretches both (see _Saver).
LOSS_BOUND_SECONDS = 2.0
# The emulator's access log; `python -m pai_local` sends it to a file unless --verbose.
ACCESS_LOG = logging.getLogger("pai_local.emulator.access")
_log = logging.getLogger("pai_local.emulator")
# Actions that only read. Anything else (and any method but GET/HEAD on S3's REST API) counts as a change.
_READ_ONLY_ACTION = re.compile(
    r"(Get|Describe|List|BatchGet|TransactGet)[A-Za-z]*|Query|Scan|Decrypt|Encrypt|ReEncrypt|"
    r"GenerateDataKey[A-Za-z]*|GenerateRandom|Sign|Verify|GenerateMac|VerifyMac|"
    # SQS is not kept on disk (pai_local.state): its polls need no snapshot.
    r"ReceiveMessage|DeleteMessage|ChangeMessageVisibility|SendMessage"
)


def use_emulator_credentials() -> None:
    """Emulators take any key; 'test'/'test' keeps real credentials out of local traffic."""
    for name, value in EMULATOR_CREDENTIALS.items():
        os.environ[name] = value
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def endpoint_answers(endpoint_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(endpoint_url, timeout=timeout):  # noqa: S310 (our own loopback URL)
            return True
    except OSError as exc:
        # Any HTTP answer, even an error status, means something is listening.
        return hasattr(exc, "code")


class EmbeddedMoto:
    """moto on 127.0.0.1:`port`. With `state_dir`, what it holds is restored from there at start and
    saved there while it runs; without, it lives in memory only. moto's backends are per process:
    one emulator per process."""

    def __init__(
        self,
        *,
        port: int = DEFAULT_EMULATOR_PORT,
        host: str = "127.0.0.1",
        state_dir: Path | None = None,
        save_interval: float = SAVE_INTERVAL_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.save_interval = save_interval
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: _OneAtATime | None = None
        self._saver: _Saver | None = None
        self._held = contextlib.ExitStack()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state_file(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / state.STATE_FILE_NAME

    def start(self) -> str:
        """Raises state.StateError for a state file it cannot use (naming it, and what to do)."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        if port_in_use(self.port, self.host):
            raise RuntimeError(
                f"port {self.port} is taken: stop what listens there, or set AWS_ENDPOINT_URL to use it as the emulator"
            )
        try:
            moto_app = DomainDispatcherApplication(create_backend_app)
            # Only a stack that saves its state takes requests one at a time (for consistent
            # snapshots); in memory, requests run side by side as in moto's own server.
            app: Callable[..., Iterable[bytes]] = moto_app
            if self.state_dir is not None:
                self._held.enter_context(state.exclusive(state.prepare_dir(self.state_dir)))
                path = self.state_dir / state.STATE_FILE_NAME
                restored = state.read(path)
                if restored is not None:
                    state.install(restored)
                self._app = app = _OneAtATime(moto_app)
                self._saver = _Saver(path, self._app, interval=self.save_interval)
                self._app.on_change = self._saver.changed
            self._server = make_server(self.host, self.port, app, threaded=True, request_handler=_request_handler())
        except BaseException:
            self._held.close()
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        if self._saver is not None:
            self._saver.start()
        return self.endpoint_url

    def save(self) -> None:
        """Writes the snapshot now (a no-op in memory-only mode)."""
        if self._saver is not None:
            self._saver.save()

    def stop(self) -> None:
        """Stops serving, then writes whatever the last snapshot missed."""
        if self._server is None:
            return
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        if self._app is not None:
            # A request already accepted but not yet run gets a 503 from here on, not a write the
            # final snapshot would miss.
            self._app.close()
            self._app = None
        if self._saver is not None:
            try:
                self._saver.stop()
            except Exception as exc:  # a full disk, say: the last complete snapshot stays in place
                _log.error("the emulator's last changes could not be saved to %s: %s", self.state_file, exc)
            self._saver = None
        self._server.server_close()
        self._server = None
        self._held.close()


class _OneAtATime:
    """WSGI middleware: one request at a time, so a snapshot taken under the same lock is
    consistent; notes each request that may change state before its response leaves."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.on_change: Callable[[], None] = lambda: None
        self._closed = False

    def close(self) -> None:
        with self.lock:
            self._closed = True

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        changes = _may_change_state(environ)
        with self.lock:
            if self._closed:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")])
                return [b"the emulator is stopping"]
            body = self.app(environ, start_response)
            try:
                chunks = list(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            if changes:
                self.on_change()
        return chunks


def _may_change_state(environ: dict[str, Any]) -> bool:
    target: str | None = environ.get("HTTP_X_AMZ_TARGET")
    action = target.rpartition(".")[2] if target else _query_action(environ)
    if action:
        return _READ_ONLY_ACTION.fullmatch(action) is None
    return environ.get("REQUEST_METHOD", "GET").upper() not in {"GET", "HEAD", "OPTIONS"}


def _query_action(environ: dict[str, Any]) -> str | None:
    """The Action of a query-protocol request (STS and the like), from the URL or the form body."""
    query: str = environ.get("QUERY_STRING", "")
    found = urllib.parse.parse_qs(query).get("Action")
    if found:
        return found[0]
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    found = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
    return found[0] if found else None


class _Saver:
    """Snapshots while there are unsaved changes, at most once per `interval`, or per twice the
    time the last one held the emulator when that is longer (so a large state leaves the emulator
    free at least two thirds of the time). A change acknowledged at time t is on disk by t + that
    pause + the time one snapshot takes."""

    def __init__(self, path: Path, app: _OneAtATime, *, interval: float) -> None:
        self.path = path
        self.app = app
        self.interval = interval
        self._dirty = threading.Event()  # changes not in the file yet
        self._wake = threading.Event()  # for the saver thread: a change, or stop
        self._stopping = threading.Event()
        self._one_save = threading.Lock()
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="emulator-saver", daemon=True)

    def changed(self) -> None:
        self._dirty.set()
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        self.save(only_if_changed=True)

    def save(self, *, only_if_changed: bool = False) -> float:
        """Returns how long the emulator was held for the capture."""
        with self._one_save:
            with self.app.lock:
                if only_if_changed and not self._dirty.is_set():
                    return 0.0
                held_from = time.monotonic()
                # Cleared before the capture: a change after it sets the flag again.
                self._dirty.clear()
                try:
                    data = state.dumps(state.capture())
                except Exception:
                    self._dirty.set()
                    raise
                held = time.monotonic() - held_from
            try:
                state.write_atomic(self.path, data)
            except BaseException:
                self._dirty.set()
                raise
            return held

    def _run(self) -> None:
        pause = self.interval
        last_start = time.monotonic() - pause
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            if self._stopping.wait(last_start + pause - time.monotonic()):
                return
            # Cleared before the save: a change during or after it wakes this loop again.
            self._wake.clear()
            if not self._dirty.is_set():
                continue
            last_start = time.monotonic()
            try:
                pause = max(self.interval, 2 * self.save())
            except Exception as exc:  # keep serving; say so once per kind of failure, and retry
                self._wake.set()
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_error:
                    _log.error("cannot save the emulator's state to %s: %s", self.path, message)
                    self._last_error = message
            else:
                if self._last_error is not None:
                    _log.warning("the emulator's state is saved to %s again", self.path)
                    self._last_error = None


def _request_handler() -> type[Any]:
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class Handler(MotoRequestHandler):
        """Access lines go to ACCESS_LOG, plain (werkzeug colours them for a terminal)."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            self.log("info", '"%s" %s %s', self.requestline.translate(_CONTROL_CHARACTERS), code, size)

        def log(self, type: str, message: str, *args: Any) -> None:
            level = logging.ERROR if type == "error" else logging.INFO
            ACCESS_LOG.log(level, "%s " + message, self.address_string(), *args)

    return Handler


_CONTROL_CHARACTERS = {code: f"\\x{code:02x}" for code in (*range(32), 127)}
