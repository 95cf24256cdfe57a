"""The model server's supervisor, with a fake child, probe and clock: no process, no socket."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from pai_local.model_server import (
    HealthPolicy,
    ModelServer,
    ModelServerCommand,
    ModelServerError,
    RestartPolicy,
    RestartSchedule,
    State,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeChild:
    def __init__(self, pid: int, argv: Sequence[str]) -> None:
        self.pid = pid
        self.argv = list(argv)
        self.returncode: int | None = None
        self.killed = False

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.killed = True
        if self.returncode is None:
            self.returncode = -signal.SIGKILL

    def wait(self, timeout: float | None = None) -> int:
        assert self.returncode is not None, "waited for a child that was never ended"
        return self.returncode


class Harness:
    """A supervisor whose children are FakeChild and whose probe answers `self.answering`."""

    def __init__(self, tmp_path: Path, *, restart: RestartPolicy | None = None, health: HealthPolicy | None = None):
        self.clock = FakeClock()
        self.children: list[FakeChild] = []
        self.answering = True
        self.probed: list[str] = []
        self.server = ModelServer(
            ModelServerCommand(tmp_path / "model.gguf", context_tokens=2048, threads=2),
            port=4321,
            log_path=tmp_path / "model-server.log",
            restart_policy=restart or RestartPolicy(first_delay_seconds=0.5, longest_delay_seconds=8),
            health=health or HealthPolicy(failed_probes_before_restart=3, startup_timeout_seconds=30),
            spawn=self.spawn,
            probe=self.probe,
            clock=self.clock,
        )

    def spawn(self, argv: Sequence[str]) -> FakeChild:
        child = FakeChild(100 + len(self.children), argv)
        self.children.append(child)
        return child

    def probe(self, url: str, timeout: float) -> bool:
        self.probed.append(url)
        return self.answering

    @property
    def child(self) -> FakeChild:
        return self.children[-1]

    def running(self) -> ModelServer:
        self.server.start(supervise=False)
        self.server.step()
        assert self.server.state is State.RUNNING
        return self.server

    def crash(self) -> None:
        self.child.returncode = -signal.SIGSEGV

    def restart_after_crash(self) -> float:
        """Crashes the child; the seconds until the supervisor starts the next one."""
        self.crash()
        self.server.step()
        assert self.server.state is State.WAITING
        waited = 0.0
        while self.server.state is State.WAITING:
            self.clock.advance(0.125)  # exact in binary: the sums compare exactly
            waited += 0.125
            self.server.step()
        self.server.step()  # the new child answers
        assert self.server.state is State.RUNNING
        return waited


def test_the_child_is_llama_cpp_server_with_the_settings_on_its_command_line(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.running()
    argv = harness.child.argv
    assert "from llama_cpp.server.__main__ import main" in argv[2]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--model": str(tmp_path / "model.gguf"),
        "--model_alias": "model",
        "--host": "127.0.0.1",
        "--port": "4321",
        "--n_ctx": "2048",
        "--n_threads": "2",
        "--interrupt_requests": "false",
    }
    assert harness.server.url == "http://127.0.0.1:4321/v1"
    assert harness.probed == ["http://127.0.0.1:4321/docs"]


def test_ready_only_once_the_child_answers(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.answering = False
    harness.server.start(supervise=False)
    for _ in range(5):
        harness.clock.advance(1)
        harness.server.step()
    assert harness.server.state is State.STARTING
    harness.answering = True
    harness.server.step()
    assert harness.server.state is State.RUNNING
    harness.server.wait_ready(timeout=0)


def test_a_first_child_that_dies_before_answering_fails_the_start_naming_the_log(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.answering = False
    harness.server.start(supervise=False)
    harness.child.returncode = 1
    harness.server.step()
    assert harness.server.state is State.FAILED
    with pytest.raises(ModelServerError, match=r"exit status 1.*model-server\.log"):
        harness.server.wait_ready(timeout=0)
    assert len(harness.children) == 1  # not restarted: it would fail the same way


def test_a_crashed_child_is_restarted_on_the_same_port(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness(tmp_path)
    server = harness.running()
    first = harness.child
    with caplog.at_level(logging.WARNING, logger="model-server"):
        harness.restart_after_crash()
    assert len(harness.children) == 2
    assert harness.child.argv == first.argv
    assert server.pid == harness.child.pid != first.pid
    assert server.restarts == 1
    assert "killed by SIGSEGV" in caplog.text and "restart 1" in caplog.text


def test_backoff_doubles_while_children_keep_dying_and_resets_after_a_stable_run(tmp_path: Path) -> None:
    harness = Harness(
        tmp_path,
        restart=RestartPolicy(
            first_delay_seconds=0.5, longest_delay_seconds=2, max_restarts_per_minute=100, stable_after_seconds=60
        ),
    )
    harness.running()
    waits = [harness.restart_after_crash() for _ in range(4)]
    assert waits == [0.5, 1.0, 2.0, 2.0]
    harness.clock.advance(61)  # this child stays up a while
    assert harness.restart_after_crash() == 0.5


def test_at_most_n_restarts_in_any_minute() -> None:
    schedule = RestartSchedule(RestartPolicy(first_delay_seconds=0, longest_delay_seconds=0, max_restarts_per_minute=3))
    starts = [schedule.next_start(now=now, ran_for=1) for now in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert starts[:3] == [0.0, 1.0, 2.0]
    assert starts[3] == 60.0  # the first of the last three leaves the minute
    assert starts[4] == 61.0
    for earlier, later in zip(starts, starts[3:], strict=False):
        assert later - earlier >= 60


def test_a_child_that_stops_answering_is_killed_and_replaced(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    server = harness.running()
    frozen = harness.child
    harness.answering = False
    server.step()
    server.step()
    assert server.state is State.RUNNING and not frozen.killed  # a slow moment is not a hang
    server.step()
    assert frozen.killed
    assert server.state is State.WAITING
    harness.answering = True
    harness.clock.advance(1)
    server.step()
    server.step()
    assert server.state is State.RUNNING and harness.child is not frozen


def test_one_good_probe_resets_the_count_of_failed_ones(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    server = harness.running()
    for answering in (False, False, True, False, False, True):
        harness.answering = answering
        server.step()
    assert server.state is State.RUNNING and len(harness.children) == 1


def test_a_restarted_child_that_never_answers_is_replaced_after_the_startup_timeout(tmp_path: Path) -> None:
    harness = Harness(tmp_path, health=HealthPolicy(startup_timeout_seconds=30))
    server = harness.running()
    harness.crash()
    server.step()
    harness.clock.advance(1)
    harness.answering = False
    server.step()  # the second child starts, and hangs while loading
    hung = harness.child
    harness.clock.advance(29)
    server.step()
    assert not hung.killed
    harness.clock.advance(2)
    server.step()
    assert hung.killed and server.state is State.WAITING


def test_stop_kills_the_child_and_keeps_it_stopped(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    server = harness.running()
    child = harness.child
    server.stop()
    assert child.killed and server.state is State.STOPPED and server.pid is None
    harness.clock.advance(120)
    server.step()
    assert len(harness.children) == 1


def test_the_previous_log_is_kept_once(tmp_path: Path) -> None:
    log = tmp_path / "model-server.log"
    log.write_text("the crash before\n")
    Harness(tmp_path).running()
    assert (tmp_path / "model-server.log.1").read_text() == "the crash before\n"
