"""The offline model in its own process: llama-cpp-python's OpenAI-compatible server, supervised.

llama.cpp is native code; when it crashes (a segfault in a CPU-specific kernel, say) it takes its
process with it. So it never runs in the API's process: `ModelServer` starts it as a child on a free
loopback port, waits until it answers, restarts it when it exits or stops answering its health
probe, and stops it with the stack. The `local` provider (pai_core.adapters.llm_local) is its
client; a request that meets a dead or frozen model gets a 503 with Retry-After, and the next
one meets a fresh server.

Restarts follow a `RestartPolicy`: a short backoff that doubles while children keep dying soon
after they start, and at most a few restarts in any minute (a child that cannot stay up is not
restarted in a tight loop). The child's own output goes to a log file, never the console; the
supervisor logs each restart through `logging` ("model-server").
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pai_core.adapters.llm_local import local_model_name
from pai_core.config import REPO_ROOT, Settings

# No "pai" in its name: Powertools' Logger(service="pai") keeps the root logger's handlers from
# emitting any record whose logger name contains "pai" (its de-duplication), which would silence
# every restart from the first request on.
logger = logging.getLogger("model-server")

# .pai/ is git-ignored.
DEFAULT_LOG_FILE = REPO_ROOT / ".pai" / "model-server.log"
HOST = "127.0.0.1"
# Served by the server's event loop without the model's lock: a server busy generating a long
# reply still answers it, a frozen or wedged one does not. (Its /v1/models waits for the lock.)
HEALTH_PATH = "/docs"

# The child runs llama-cpp-python's server (`python -m llama_cpp.server`'s own main, same
# arguments), plus three things. It exits when the process that started it is gone, so a
# supervisor killed with -9 leaves no model server behind holding memory. Its settings come from
# the command line alone: the server also reads any of its setting names from the environment
# (case-insensitively: PORT, HOST, API_KEY, MODEL, ...), which a user's shell may well have set.
# And it keeps no access log: a line for every health probe would bury what its log is for.
_CHILD_PROGRAM = """\
import os, threading, time
parent = os.getppid()
def _orphaned():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
threading.Thread(target=_orphaned, daemon=True).start()
from llama_cpp.server.settings import ModelSettings, ServerSettings
names = {name.lower() for name in (*ModelSettings.model_fields, *ServerSettings.model_fields)}
for key in [key for key in os.environ if key.lower() in names | {"config_file"}]:
    del os.environ[key]
import uvicorn
_run = uvicorn.run
uvicorn.run = lambda app, **options: _run(app, **options, access_log=False)
from llama_cpp.server.__main__ import main
main()
"""


class ModelServerError(RuntimeError):
    """The model server could not be started; the message says where its log is."""


class Process(Protocol):
    """What the supervisor needs of a child (subprocess.Popen has it)."""

    pid: int

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


Spawn = Callable[[Sequence[str]], Process]
Probe = Callable[[str, float], bool]


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_seconds: float = 0.25
    longest_delay_seconds: float = 10.0
    max_restarts_per_minute: int = 5
    # A child that ran this long before it ended was not failing at start: the backoff starts over.
    stable_after_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts_per_minute < 1 or self.first_delay_seconds < 0:
            raise ValueError("a restart policy needs at least one restart a minute and a delay >= 0")


class RestartSchedule:
    """When the next child starts after one ended: pure arithmetic over the times given."""

    WINDOW_SECONDS = 60.0

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._starts: deque[float] = deque(maxlen=policy.max_restarts_per_minute)
        self._quick_failures = 0

    def next_start(self, *, now: float, ran_for: float) -> float:
        policy = self._policy
        if ran_for >= policy.stable_after_seconds:
            self._quick_failures = 0
        delay = min(policy.first_delay_seconds * 2.0**self._quick_failures, policy.longest_delay_seconds)
        self._quick_failures += 1
        at = now + delay
        if len(self._starts) == policy.max_restarts_per_minute:
            # The earliest of the last N restarts must have left the window before another one.
            at = max(at, self._starts[0] + self.WINDOW_SECONDS)
        self._starts.append(at)
        return at


@dataclass(frozen=True)
class HealthPolicy:
    probe_interval_seconds: float = 0.5
    probe_timeout_seconds: float = 2.0
    failed_probes_before_restart: int = 3
    # Loading the model; a child that has not answered by then is killed and started again.
    startup_timeout_seconds: float = 120.0
    # How often a starting child is probed (so a restart is noticed soon after it is ready).
    startup_probe_interval_seconds: float = 0.2


@dataclass(frozen=True)
class ModelServerCommand:
    """The child's command line, from Settings: model file, context window, threads."""

    model_path: Path
    context_tokens: int
    threads: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelServerCommand:
        return cls(settings.resolve_local_llm_path(), settings.llm_context_tokens, settings.llm_threads)

    @property
    def alias(self) -> str:
        return local_model_name(self.model_path)

    def argv(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-c",
            _CHILD_PROGRAM,
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            HOST,
            "--port",
            str(port),
            "--n_ctx",
            str(self.context_tokens),
            "--n_threads",
            str(self.threads),
            # Its default cuts a streaming reply short (as if complete) when another request
            # arrives; here concurrent chats wait their turn instead.
            "--interrupt_requests",
            "false",
        ]


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting to restart"
    FAILED = "failed"
    STOPPED = "stopped"


class ModelServer:
    """Supervises one model server child at a time on a fixed loopback port (so its URL stays the
    same across restarts). `start()` spawns it and a supervising thread; `wait_ready()` blocks
    until it answers; `stop()` ends both. `step()` is one round of supervision, which the thread
    runs and unit tests call directly with a fake process, probe and clock."""

    def __init__(
        self,
        command: ModelServerCommand,
        *,
        port: int,
        log_path: Path = DEFAULT_LOG_FILE,
        restart_policy: RestartPolicy | None = None,
        health: HealthPolicy | None = None,
        spawn: Spawn | None = None,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = command
        self.port = port
        self.log_path = log_path
        self.health = health or HealthPolicy()
        self._schedule = RestartSchedule(restart_policy or RestartPolicy())
        self._spawn_process = spawn or self._spawn_logged
        self._probe = probe or http_answers
        self._clock = clock
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._state = State.STOPPED
        self._child: Process | None = None
        self._spawned_at = 0.0
        self._restart_at = 0.0
        self._failed_probes = 0
        self._ever_ready = False
        self._failure = ""
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_settings(cls, settings: Settings, *, port: int, log_path: Path = DEFAULT_LOG_FILE) -> ModelServer:
        return cls(ModelServerCommand.from_settings(settings), port=port, log_path=log_path)

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (PAI_LOCAL_LLM_URL)."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._child is None else self._child.pid

    def start(self, *, supervise: bool = True) -> None:
        """Spawns the first child and returns at once; with `supervise`, a thread watches it."""
        _rotate(self.log_path)
        with self._lock:
            self._spawn(self._clock())
        if supervise:
            self._thread = threading.Thread(target=self._supervise, name="model-server-supervisor", daemon=True)
            self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until a child answers. ModelServerError when the first one never did (or `timeout`
        passed): the model cannot be served at all, which is a failure to start the stack."""
        limit = self.health.startup_timeout_seconds + 10 if timeout is None else timeout
        with self._settled:
            settled = self._settled.wait_for(lambda: self._state in (State.RUNNING, State.FAILED), limit)
            if self._state is State.FAILED:
                raise ModelServerError(self._failure)
            if not settled:
                raise ModelServerError(
                    f"the offline model's server did not answer in {limit:.0f} s; see {self.log_path}"
                )

    @contextlib.contextmanager
    def serving(self) -> Iterator[ModelServer]:
        """Started and answering inside the block, stopped when it ends (however it ends)."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.health.probe_timeout_seconds + 5)
        with self._lock:
            child, self._child = self._child, None
            self._state = State.STOPPED
            self._settled.notify_all()
        if child is not None:
            _end(child)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.step()
            except Exception:  # the supervisor must outlive anything one round meets
                logger.exception("model server supervision failed; trying again")
                wait = self.health.probe_interval_seconds
            self._stopping.wait(wait)

    def step(self) -> float:
        """One round: restart a child that is due, notice one that ended, probe one that runs.
        Returns the seconds until the next round is due."""
        with self._lock:
            child = self._tend(self._clock())
        if child is not None:
            # Outside the lock: a probe may take its whole timeout.
            answered = self._probe(self._health_url, self.health.probe_timeout_seconds)
            with self._lock:
                if child is self._child:
                    self._judge(child, answered, self._clock())
        with self._lock:
            return self._pause(self._clock())

    def _tend(self, now: float) -> Process | None:
        """With the lock held: starts a child that is due; the running child to probe, if any."""
        if self._state is State.WAITING and now >= self._restart_at:
            self._spawn(now)
            return None  # probed from the next round on
        if self._state not in (State.STARTING, State.RUNNING) or self._child is None:
            return None
        code = self._child.poll()
        if code is not None:
            self._ended(now, f"exited ({_describe_exit(code)})")
            return None
        return self._child

    def _judge(self, child: Process, answered: bool, now: float) -> None:
        """With the lock held: what a probe's answer (or its absence) means for `child`."""
        if answered:
            self._failed_probes = 0
            if self._state is State.STARTING:
                self._state = State.RUNNING
                self._ever_ready = True
                logger.info("offline model server ready (pid %d, %s)", child.pid, self.url)
                self._settled.notify_all()
            return
        if self._state is State.STARTING:
            if now - self._spawned_at >= self.health.startup_timeout_seconds:
                _end(child)
                self._ended(now, f"did not answer within {self.health.startup_timeout_seconds:.0f} s of starting")
            return
        self._failed_probes += 1
        if self._failed_probes >= self.health.failed_probes_before_restart:
            _end(child)
            self._ended(now, f"stopped answering ({self._failed_probes} health probes in a row failed); killed it")

    def _pause(self, now: float) -> float:
        """With the lock held: seconds until the next round."""
        if self._state is State.STARTING:
            return self.health.startup_probe_interval_seconds
        if self._state is State.WAITING:
            return max(0.0, min(self._restart_at - now, self.health.probe_interval_seconds))
        return self.health.probe_interval_seconds

    @property
    def _health_url(self) -> str:
        return f"http://{HOST}:{self.port}{HEALTH_PATH}"

    def _spawn(self, now: float) -> None:
        """With the lock held."""
        self._failed_probes = 0
        self._spawned_at = now
        try:
            self._child = self._spawn_process(self.command.argv(self.port))
        except OSError as exc:
            self._child = None
            self._ended(now, f"could not be started ({exc})")
            return
        self._state = State.STARTING

    def _ended(self, now: float, why: str) -> None:
        """With the lock held: the child is gone; schedule the next one, unless none ever answered."""
        self._child = None
        if not self._ever_ready:
            # A first start that fails (no llama-cpp-python, a bad model file) fails the same way
            # each time: say so instead of retrying.
            self._state = State.FAILED
            self._failure = f"the offline model's server {why} before it answered; see {self.log_path}"
            logger.error("%s", self._failure)
            self._settled.notify_all()
            return
        self._restart_at = self._schedule.next_start(now=now, ran_for=now - self._spawned_at)
        self._state = State.WAITING
        self.restarts += 1
        logger.warning(
            "offline model server %s; restart %d in %.1f s (its log: %s)",
            why,
            self.restarts,
            self._restart_at - now,
            self.log_path,
        )

    def _spawn_logged(self, argv: Sequence[str]) -> Process:
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting the model server\n".encode())
            log.flush()
            # Its own session: a Ctrl-C at the terminal reaches the stack, which stops the child in
            # order, rather than both at once.
            return subprocess.Popen(  # noqa: S603 (our own interpreter and fixed arguments)
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def http_answers(url: str, timeout: float) -> bool:
    """Any HTTP answer below 500 within `timeout`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _end(child: Process) -> None:
    """Killed outright: the model server holds nothing that needs saving, and a frozen (stopped)
    process would never act on a polite signal."""
    try:
        child.kill()
        child.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        logger.warning("model server pid %d did not end when killed", child.pid)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _rotate(log_path: Path) -> None:
    """The previous run's log is kept as `<name>.1`, so one crash's log survives one restart of the stack."""
    if log_path.exists():
        os.replace(log_path, log_path.with_name(log_path.name + ".1"))
