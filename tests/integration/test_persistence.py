"""What the local stack stores outlives it: `python -m pai_local` run as a person runs it (a child
process, its own ports, PAI_STATE_DIR in a temporary directory), stopped cleanly or killed with
SIGKILL, started again on the same directory.

The runs use the `openai` provider, which loads no model at start (no chat happens here); memories
still go through the real embedding model, KMS, the key store and DynamoDB in the embedded emulator."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from pai_core.adapters.dynamodb_api_keys import DynamoApiKeyStore
from pai_core.auth import ApiKeys, parse_key
from pai_core.bootstrap import SystemClock
from pai_core.config import REPO_ROOT, Settings
from pai_local import state
from pai_local.emulator import LOSS_BOUND_SECONDS, free_port
from tests.integration.support import REGION, ApiClient

pytestmark = pytest.mark.integration

START_TIMEOUT_SECONDS = 180.0


class LocalRun:
    """One `python -m pai_local` in its own session (so a kill reaches anything it started)."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.key_file = workdir / "api-key"
        self.port = free_port()
        self.emulator_port = free_port()
        self.output = workdir / f"run-{time.monotonic_ns()}.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PAI_", "AWS_ENDPOINT_URL", "AWS_PROFILE"))
        }
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            PAI_STATE_DIR=str(self.state_dir),
            PAI_LLM_PROVIDER="openai",
            PAI_OPENAI_API_KEY="unused",
            PAI_OPENAI_BASE_URL="http://127.0.0.1:9/v1",
            # The write loop sends more than the default limit allows in a minute.
            PAI_RATE_LIMIT_PER_MINUTE="0",
            AWS_REGION=REGION,
        )
        args = ["--port", str(self.port), "--emulator-port", str(self.emulator_port)]
        args += ["--api-key-file", str(self.key_file), *extra_args]
        with self.output.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pai_local", *args],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> ApiClient:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while "PAI API:" not in self.text():
            if self.process.poll() is not None:
                pytest.fail(f"python -m pai_local exited with {self.process.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"python -m pai_local did not start:\n{self.text()}")
            time.sleep(0.1)
        return ApiClient(self.url, api_key=self.key_file.read_text().strip(), timeout=30)

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"python -m pai_local did not exit:\n{self.text()}")

    def stop(self) -> int:
        """As Ctrl-C or `docker stop` would."""
        os.kill(self.process.pid, signal.SIGTERM)
        return self.wait_exit()

    def kill(self) -> None:
        """kill -9, of the process and anything it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


Start = Callable[..., LocalRun]


@pytest.fixture
def start(workdir: Path) -> Iterator[Start]:
    """Starts runs in `workdir` (all of a test's runs share its state directory) and kills, at the
    end, any still going."""
    started: list[LocalRun] = []

    def start_one(*extra_args: str) -> LocalRun:
        run = LocalRun(workdir, *extra_args)
        started.append(run)
        return run

    yield start_one
    for run in started:
        run.kill()


def store(api: ApiClient, content: str) -> str:
    answer = api.post("/memory", {"action": "store", "content": content})
    assert answer.status == 201, answer
    return str(answer.json["id"])


def retrieve(api: ApiClient, memory_id: str) -> int:
    return api.post("/memory", {"action": "retrieve", "id": memory_id}).status


def test_a_clean_stop_keeps_memories_readable_and_searchable(start: Start) -> None:
    first = start()
    api = first.wait_ready()
    assert f"state: {Path('state') / state.STATE_FILE_NAME}" in first.text()
    kept = {store(api, text): text for text in ("My cat is called Miso.", "The spare key is under the blue pot.")}
    assert first.stop() == 0

    second = start()
    api = second.wait_ready()
    assert "new API key" not in second.text()  # the saved key was found again, still active
    for memory_id, text in kept.items():
        answer = api.post("/memory", {"action": "retrieve", "id": memory_id})
        # Decrypting it needs the user's branch key from the key store, unwrapped by the emulator's
        # KMS key: the key material came back from the file, not from this new process.
        assert (answer.status, answer.json["content"]) == (200, text)
    found = api.post("/search", {"query": "what is my cat called"})
    assert found.status == 200 and found.json["results"][0]["id"] in kept
    assert second.stop() == 0


def test_a_kill_9_loses_at_most_the_writes_of_the_last_moments(start: Start) -> None:
    run = start()
    api = run.wait_ready()
    acknowledged: list[tuple[float, str]] = []  # (monotonic time the answer arrived, memory id)
    stop_writing = threading.Event()

    def write_loop() -> None:
        number = 0
        while not stop_writing.is_set():
            number += 1
            try:
                answer = api.post("/memory", {"action": "store", "content": f"note number {number}"})
            except OSError:
                return  # the process was killed under this request
            if answer.status == 201:
                acknowledged.append((time.monotonic(), str(answer.json["id"])))

    writer = threading.Thread(target=write_loop)
    writer.start()
    # Long enough that many writes are older than the bound when the kill comes.
    time.sleep(LOSS_BOUND_SECONDS + 3.0)
    killed_at = time.monotonic()
    run.kill()
    stop_writing.set()
    writer.join(60)

    must_survive = [memory_id for at, memory_id in acknowledged if at < killed_at - LOSS_BOUND_SECONDS]
    recent = [memory_id for at, memory_id in acknowledged if at >= killed_at - LOSS_BOUND_SECONDS]
    assert must_survive, "no write was acknowledged early enough to test the bound"

    again = start()
    api = again.wait_ready()
    lost = [(memory_id, status) for memory_id in must_survive if (status := retrieve(api, memory_id)) != 200]
    assert lost == [], f"{len(lost)} of {len(must_survive)} writes older than {LOSS_BOUND_SECONDS} s were lost"
    ages = {memory_id: killed_at - at for at, memory_id in acknowledged}
    recent_lost = [memory_id for memory_id in recent if retrieve(api, memory_id) != 200]
    print(
        f"kill -9: {len(must_survive)} writes older than {LOSS_BOUND_SECONDS} s all kept; "
        f"{len(recent) - len(recent_lost)} of the {len(recent)} in the last {LOSS_BOUND_SECONDS} s kept; "
        f"the oldest write lost was acknowledged {max((ages[m] for m in recent_lost), default=0):.2f} s before the kill"
    )
    assert again.stop() == 0


# Every kind of damage is refused in tests/unit/test_emulator_state.py; here, that the start stops.
DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[: len(data) // 2],
    "another moto": lambda data: data.replace(f'"moto": "{state.moto_version()}"'.encode(), b'"moto": "4.0.0"', 1),
}


def test_a_damaged_or_incompatible_state_file_stops_the_start_and_is_left_as_it_is(start: Start) -> None:
    first = start()
    first.wait_ready()
    assert first.stop() == 0
    state_file = first.state_dir / state.STATE_FILE_NAME
    good = state_file.read_bytes()

    for name, damage in DAMAGE.items():
        damaged = damage(good)
        assert damaged != good, name
        state_file.write_bytes(damaged)
        refused = start()
        assert refused.wait_exit() == 1, name
        message = refused.text()
        assert "Traceback" not in message and "PAI API:" not in message, message
        assert f"pai: cannot start: the emulator's state file {state_file} cannot be used" in message, message
        assert f"mv {state_file} {state_file}.old" in message and "--fresh" in message, message
        if name == "another moto":
            assert "moto 4.0.0" in message, message
        assert state_file.read_bytes() == damaged, name  # never silently replaced

    throwaway = start("--fresh")
    throwaway.wait_ready()
    assert "state: in memory only" in throwaway.text()
    assert throwaway.stop() == 0
    assert state_file.read_bytes() == damaged  # --fresh reads and writes nothing there


def test_state_files_are_readable_by_their_owner_only(start: Start, workdir: Path) -> None:
    loose = workdir / "state"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)  # as a copy or an unpacked backup might leave it
    run = start()
    run.wait_ready()
    assert run.stop() == 0
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    files = sorted(path.name for path in loose.iterdir())
    assert files == sorted([state.STATE_FILE_NAME, state.LOG_FILE_NAME, state.LOCK_FILE_NAME])
    for path in loose.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_revoked_key_stays_revoked_after_a_restart(start: Start) -> None:
    first = start()
    api = first.wait_ready()
    old_key = api.api_key
    assert old_key is not None
    assert api.post("/memory", {"action": "list"}).status == 200
    dynamodb = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=first.emulator_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    keys = ApiKeys(DynamoApiKeyStore(dynamodb, Settings().api_keys_table), SystemClock())
    keys.revoke(parse_key(old_key)[1])
    assert first.stop() == 0

    second = start()
    new_api = second.wait_ready()
    assert "new API key" in second.text()  # the saved one is revoked: a new key, saved in its place
    assert new_api.api_key != old_key
    assert new_api.with_key(old_key).post("/memory", {"action": "list"}).status == 401
    assert new_api.post("/memory", {"action": "list"}).status == 200
    assert second.stop() == 0
