"""Where the local gateway's functions run: execution environments as Lambda gives them.

Lambda runs each function in execution environments that handle one request at a time, are reused
while warm, are added when every one is busy (up to the function's concurrency), and are stopped
when an invocation outlives the function's Timeout. The handlers rely on the one-at-a-time part:
Powertools keeps the event being resolved, and the Lambda context, in class-level state
(BaseRouter.current_event) that every resolver in a process shares, so two requests resolved at
once in one process read each other's event.

Two ways to run them, behind one interface (`Functions`):
- ProcessFunctions (`make run`): per function a pool of worker processes, each an execution
  environment with its own composition root, one request at a time, replaced when it times out
  or dies. A chat that takes its time blocks nothing but its own environment.
- InlineFunctions (the integration tests): handlers run in threads of the calling process, one at
  a time process-wide, so that a test can hand them a composition root of its own (set_container)
  or a recording chat model. Nothing can stop a thread, so there is no timeout here.

An invocation is read as a sequence of messages: Started and Wrote when the function streams its
response (context.response_stream), then one Returned or Failed. Only an invocation made with
`response_stream=True` gets a response stream, as only Lambda's streaming invocations do: API
Gateway invokes the functions behind the HTTP API without one, so the local gateway does too (a
streamed chat there arrives in one body, as in AWS; the Function URL's emulation streams).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, Protocol

from pai_core.config import Settings
from pai_local.logs import configure_console_logging
from pai_local.template import Template

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
log = logging.getLogger("pai_local.functions")

# How long a new worker process may take to import the handlers and report ready.
WORKER_BOOT_SECONDS = 180.0
# What each function's first request would load (the container builds its parts on first use),
# loaded while its worker starts instead: like Lambda's init phase, this is not part of any
# invocation's timeout.
WARM_UP: dict[str, tuple[str, ...]] = {
    "chat": ("chat_model", "embedder"),
    "memory": ("embedder",),
    "search": ("embedder",),
    "learning": ("embedder",),
    "document_ingest": ("embedder",),
}
# "spawn": the gateway process runs threads (the HTTP server, the embedded emulator), and a fork
# would copy their locks mid-use.
START_METHOD = "spawn"


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function as the template declares it."""

    name: str  # "chat": what the handler's context calls the function
    handler: str  # "handlers.chat.handler"
    timeout_seconds: float
    memory_mb: int = 1024


def functions_from_template(template: Template, *, timeouts: Mapping[str, float] | None = None) -> list[FunctionSpec]:
    """Every AWS::Lambda::Function of the template; `timeouts` (by function name) replaces the
    template's Timeout, for tests that need a short one."""
    specs = []
    for properties in (spec.get("Properties", {}) for spec in template.of_type("AWS::Lambda::Function").values()):
        handler = str(properties["Handler"])
        if "AWS_LAMBDA_EXEC_WRAPPER" in properties.get("Environment", {}).get("Variables", {}):
            # The streamed chat's run.sh (the Web Adapter's entry point): served locally by its own
            # HTTP server (pai_local.stack), not invoked through the gateway.
            continue
        name = handler.split(".")[-2]
        timeout = float((timeouts or {}).get(name, template.resolve(properties.get("Timeout", 3))))
        specs.append(FunctionSpec(name, handler, timeout, int(template.resolve(properties.get("MemorySize", 128)))))
    return specs


# -- messages from an invocation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The function began a streamed response."""

    status: int
    headers: dict[str, str]


@dataclass(frozen=True)
class Wrote:
    text: str


@dataclass(frozen=True)
class Returned:
    """The function returned: its proxy result, or None when it streamed its response."""

    result: dict[str, Any] | None


FailureReason = Literal["error", "timeout", "crashed", "busy", "unavailable"]


@dataclass(frozen=True)
class Failed:
    """error: the handler raised; timeout: it ran past the function's timeout and its environment
    was stopped; crashed: its environment died under it; busy: no environment came free in time;
    unavailable: no environment could be started (or the gateway is stopping)."""

    reason: FailureReason


Message = Started | Wrote | Returned | Failed


class Invocation(Protocol):
    def next(self) -> Message:
        """The next message; not called again after a Returned or a Failed."""
        ...

    def abandon(self) -> None:
        """The caller reads no further (its client went away); the function runs to its end."""
        ...


class Functions(Protocol):
    """Runs the template's functions: `invoke` takes the handler's dotted name and the event."""

    def start(self) -> None: ...

    def invoke(self, handler: str, event: dict[str, Any], *, response_stream: bool = False) -> Invocation: ...

    def stop(self) -> None: ...


# -- the Lambda context, as a handler sees it --------------------------------------------------------


class ResponseStream:
    """context.response_stream, like the one Lambda's response streaming gives a function: start()
    sends the status and headers, each write() one piece of the body, as the handler produces them."""

    def __init__(self, send: Callable[[Message], None], *, on_start: Callable[[], None] = lambda: None) -> None:
        self._send = send
        self._on_start = on_start
        self.started = False

    def start(self, status: int, headers: dict[str, str]) -> None:
        self._send(Started(status, dict(headers)))
        self.started = True
        self._on_start()

    def write(self, text: str) -> None:
        if text:
            self._send(Wrote(text))


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read, and a response
    stream, like the one Lambda's response streaming gives a function."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: float = 60.0
    response_stream: ResponseStream | None = None

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(dotted: str) -> LambdaHandler:
    module_name, function_name = dotted.rsplit(".", 1)
    handler: LambdaHandler = getattr(importlib.import_module(module_name), function_name)
    return handler


def _function_name(handler: str) -> str:
    return handler.split(".")[-2]


# -- inline: threads of this process, one at a time --------------------------------------------------


class OneInvocationAtATime:
    """One function invocation at a time in this process (see the module's docstring). A function
    that streams its response lets the next one in once its status line is out: from then on it
    writes only to its own stream."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._held = False

    def __enter__(self) -> OneInvocationAtATime:
        self._lock.acquire()
        self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _QueuedInvocation:
    def __init__(self) -> None:
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def next(self) -> Message:
        return self.messages.get()

    def abandon(self) -> None:
        """The thread finishes on its own; what it still sends is dropped with the queue."""


class InlineFunctions:
    """Handlers run in threads of this process, serialized by OneInvocationAtATime. Every function
    gets `timeout_seconds` in its context; nothing stops it past that."""

    def __init__(self, *, timeout_seconds: float = 60.0) -> None:
        self._timeout_seconds = timeout_seconds
        self._handlers: dict[str, LambdaHandler] = {}
        self._handlers_lock = threading.Lock()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def _handler(self, dotted: str) -> LambdaHandler:
        with self._handlers_lock:
            if dotted not in self._handlers:
                self._handlers[dotted] = load_handler(dotted)
            return self._handlers[dotted]

    def invoke(self, handler: str, event: dict[str, Any], *, response_stream: bool = False) -> Invocation:
        invocation = _QueuedInvocation()
        function = self._handler(handler)

        def run() -> None:
            outcome: Message = Failed("error")  # whatever ends the thread, the reader hears of it
            try:
                with OneInvocationAtATime() as turn:
                    stream = ResponseStream(invocation.messages.put, on_start=turn.release) if response_stream else None
                    context = LocalLambdaContext(
                        _function_name(handler), timeout_seconds=self._timeout_seconds, response_stream=stream
                    )
                    try:
                        result = function(event, context)
                    except Exception:
                        log.exception("handler %s failed", handler)
                        return
                outcome = Returned(None if stream is not None and stream.started else result)
            finally:
                invocation.messages.put(outcome)

        threading.Thread(target=run, name=f"pai-{_function_name(handler)}", daemon=True).start()
        return invocation


# -- processes: a pool of execution environments per function ----------------------------------------


@dataclass(frozen=True)
class _Ready:
    pid: int


def _worker_main(conn: Connection, settings: Settings, function: FunctionSpec, log_level: int) -> None:
    """One execution environment: its own composition root, built once, then one request at a time."""
    # Ctrl-C reaches the whole process group; the gateway stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_console_logging(log_level)
    try:
        from pai_core.bootstrap import Container, set_container

        container = Container(settings)
        set_container(container)
        handler = load_handler(function.handler)
    except Exception:
        log.exception("function %s could not start", function.name)
        return
    for part in WARM_UP.get(function.name, ()):
        try:
            getattr(container, part)
        except Exception as exc:  # its requests will say what is wrong, as they would without this
            log.warning("function %s: %s not loaded ahead (%s)", function.name, part, type(exc).__name__)
    try:
        conn.send(_Ready(os.getpid()))
    except OSError:
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the gateway has gone
            return
        if request is None:
            return
        event, timeout_seconds, streaming = request
        stream = ResponseStream(conn.send) if streaming else None
        context = LocalLambdaContext(
            function.name,
            memory_limit_in_mb=function.memory_mb,
            timeout_seconds=timeout_seconds,
            response_stream=stream,
        )
        outcome: Message
        try:
            result = handler(event, context)
        except Exception:
            log.exception("handler %s failed", function.handler)
            outcome = Failed("error")
        else:
            outcome = Returned(None if stream is not None and stream.started else result)
        try:
            conn.send(outcome)
        except (BrokenPipeError, EOFError):
            return
        except Exception:  # a result that cannot be pickled
            log.exception("handler %s returned something that is not a proxy result", function.handler)
            conn.send(Failed("error"))


class _Worker:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class _Busy(Exception):
    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkerPool:
    """The execution environments of one function: at least one warm worker once started, more
    (up to `max_workers`) while every one is busy. A request waits up to `wait_seconds` for one to
    come free, and for one that is starting until it is up."""

    def __init__(
        self,
        function: FunctionSpec,
        settings: Settings,
        *,
        max_workers: int,
        wait_seconds: float,
        context: Any,  # a multiprocessing context: its Process and Pipe
    ) -> None:
        if max_workers < 1:
            raise ValueError("a function needs at least one worker")
        self.function = function
        self._settings = settings
        self._max_workers = max_workers
        self._wait_seconds = wait_seconds
        self._context = context
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._boot_failures = 0
        self._stopping = False
        self._changed = threading.Condition()

    # -- workers coming and going

    def _spawn(self) -> _Worker | None:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child, self._settings, self.function, logging.getLogger().getEffectiveLevel()),
            name=f"pai-{self.function.name}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        try:
            ready = parent.poll(WORKER_BOOT_SECONDS) and isinstance(parent.recv(), _Ready)
        except (EOFError, OSError):
            ready = False
        if not ready:
            log.error("a worker of function %s did not start", self.function.name)
            worker.kill()
            return None
        return worker

    def _add_worker(self) -> None:
        """Runs in its own thread: the caller counted it in `_starting`."""
        worker = self._spawn()
        with self._changed:
            self._starting -= 1
            if worker is None:
                self._boot_failures += 1
            elif not self._stopping:
                self._idle.append(worker)
                worker = None
            self._changed.notify_all()
        if worker is not None:
            worker.kill()

    def _grow(self) -> None:
        """Called holding `_changed`."""
        self._starting += 1
        threading.Thread(target=self._add_worker, name=f"pai-{self.function.name}-start", daemon=True).start()

    def start(self) -> None:
        """Starts the first worker and waits until it is warm."""
        with self._changed:
            self._starting += 1
        self._add_worker()
        with self._changed:
            if not self._idle:
                raise RuntimeError(f"the {self.function.name} function's first worker did not start (see the log)")

    def _count(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def acquire(self) -> _Worker:
        deadline = time.monotonic() + self._wait_seconds
        with self._changed:
            failures = self._boot_failures
            while True:
                if self._stopping:
                    raise _Busy("unavailable")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        self._busy.add(worker)
                        return worker
                    threading.Thread(target=worker.kill, daemon=True).start()  # died while idle
                if self._boot_failures != failures and self._count() == 0:
                    raise _Busy("unavailable")  # the next request tries again, rather than this one in a loop
                if self._count() < self._max_workers:
                    self._grow()
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not self._starting:
                    raise _Busy("busy" if self._busy else "unavailable")
                # A worker on its way is waited for: its start is bounded by WORKER_BOOT_SECONDS.
                self._changed.wait(remaining if remaining > 0 else None)

    def release(self, worker: _Worker) -> None:
        with self._changed:
            self._busy.discard(worker)
            if self._stopping:
                threading.Thread(target=worker.kill, daemon=True).start()
            else:
                self._idle.append(worker)
            self._changed.notify_all()

    def discard(self, worker: _Worker) -> None:
        """Stops a worker that timed out or died, and keeps one warm in its place."""
        with self._changed:
            self._busy.discard(worker)
            if not self._stopping and self._count() == 0:
                self._grow()
            self._changed.notify_all()
        worker.kill()

    def pids(self, *, busy: bool | None = None) -> list[int]:
        with self._changed:
            workers = [*self._idle, *self._busy]
            if busy is not None:
                workers = list(self._busy) if busy else list(self._idle)
        return [worker.pid for worker in workers if worker.pid is not None]

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
            self._changed.notify_all()
        for worker in idle:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in idle:
            worker.process.join(2)
            worker.kill()
        for worker in busy:
            worker.kill()

    # -- invoking

    def invoke(self, event: dict[str, Any], *, response_stream: bool = False) -> Invocation:
        while True:
            try:
                worker = self.acquire()
            except _Busy as busy:
                return _Answered(Failed(busy.reason))
            try:
                worker.conn.send((event, self.function.timeout_seconds, response_stream))
            except OSError:  # it died while idle: the request never reached it, so try another
                self.discard(worker)
                continue
            return _WorkerInvocation(self, worker, time.monotonic() + self.function.timeout_seconds)


class _Answered:
    def __init__(self, message: Message) -> None:
        self._message = message

    def next(self) -> Message:
        return self._message

    def abandon(self) -> None:
        pass


class _WorkerInvocation:
    def __init__(self, pool: WorkerPool, worker: _Worker, deadline: float) -> None:
        self._pool = pool
        self._worker = worker
        self._deadline = deadline
        self._done = False

    def next(self) -> Message:
        if self._done:
            raise RuntimeError("the invocation is over")
        conn = self._worker.conn
        try:
            arrived = conn.poll(max(0.0, self._deadline - time.monotonic()))
            message: Message | None = conn.recv() if arrived else None
        except (EOFError, OSError):
            log.error("a worker of function %s died during a request", self._pool.function.name)
            return self._end(Failed("crashed"))
        except Exception:  # a message that does not unpickle: the worker cannot be trusted further
            log.exception("a worker of function %s sent something unreadable", self._pool.function.name)
            return self._end(Failed("error"))
        if message is None:
            log.error(
                "function %s ran past its %g s timeout: its worker is stopped",
                self._pool.function.name,
                self._pool.function.timeout_seconds,
            )
            return self._end(Failed("timeout"))
        if isinstance(message, Returned | Failed):
            self._done = True
            self._pool.release(self._worker)
        return message

    def _end(self, failure: Failed) -> Failed:
        self._done = True
        self._pool.discard(self._worker)
        return failure

    def abandon(self) -> None:
        if not self._done:
            threading.Thread(target=self._drain, name="pai-drain", daemon=True).start()

    def _drain(self) -> None:
        while not self._done:
            self.next()


class ProcessFunctions:
    """A WorkerPool per function of the template, each up to `max_workers` processes."""

    def __init__(
        self,
        settings: Settings,
        functions: Iterable[FunctionSpec],
        *,
        max_workers: int = 2,
        start_method: str = START_METHOD,
    ) -> None:
        context = multiprocessing.get_context(start_method)
        self._pools = {
            function.handler: WorkerPool(
                function, settings, max_workers=max_workers, wait_seconds=function.timeout_seconds, context=context
            )
            for function in functions
        }

    def start(self) -> None:
        failures: list[str] = []

        def start(pool: WorkerPool) -> None:
            try:
                pool.start()
            except RuntimeError as exc:
                failures.append(str(exc))

        starters = [threading.Thread(target=start, args=(pool,), daemon=True) for pool in self._pools.values()]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        if failures:
            self.stop()
            raise RuntimeError("; ".join(failures))

    def pool(self, name: str) -> WorkerPool:
        """The pool of the function `name` ("chat")."""
        return next(pool for pool in self._pools.values() if pool.function.name == name)

    def invoke(self, handler: str, event: dict[str, Any], *, response_stream: bool = False) -> Invocation:
        pool = self._pools.get(handler)
        if pool is None:
            return _Answered(Failed("unavailable"))
        return pool.invoke(event, response_stream=response_stream)

    def stop(self) -> None:
        for pool in self._pools.values():
            pool.stop()
