"""The operator scripts (scripts/api_keys.py, scripts/users.py) as the README runs them against
`make run`: `--endpoint-url http://127.0.0.1:4566` and nothing else. A loopback endpoint implies the
emulator's credentials and `make run`'s region, whatever the operator's shell holds (no credentials,
a profile this machine lacks, a profile with another region); and when the storage cannot be used,
one line says why (nothing listening, the stack's table missing, credentials missing), never a
traceback."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest

from pai_local.emulator import free_port
from pai_local.stack import RunningStack
from tests.integration.support import run_script

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_shell(tmp_path: Path) -> dict[str, str | None]:
    """An operator's shell with no usable AWS credentials: none in the environment, a profile named
    that does not exist, a config file whose default region is not the stack's."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = ap-southeast-2\n", encoding="utf-8")
    return {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_DEFAULT_REGION": None,
        "AWS_REGION": None,
        "AWS_PROFILE": "no-such-profile",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # the chain's last resort would ask the network
    }


def failure_line(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The line that says why the script failed: its last, without a traceback before it."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), result.stderr
    return last


def test_keys_on_the_local_emulator_need_no_exported_credentials(
    stack: RunningStack, bare_shell: dict[str, str | None]
) -> None:
    user = f"bare-{secrets.token_hex(4)}"
    created = run_script(stack, "api_keys.py", "create", "--user", user, environment=bare_shell)
    assert created.returncode == 0, created.stderr
    (key,) = re.findall(r"^pai_[0-9a-f]{16}_\S+$", created.stdout, flags=re.MULTILINE)
    assert stack.container.api_keys.identify(f"Bearer {key}").user_id == user  # in the stack's own table

    listed = run_script(stack, "api_keys.py", "list", "--user", user, environment=bare_shell)
    assert listed.returncode == 0, listed.stderr
    assert key.split("_")[1] in listed.stdout


def test_users_on_the_local_emulator_need_no_exported_credentials(
    stack: RunningStack, bare_shell: dict[str, str | None]
) -> None:
    user = f"bare-{secrets.token_hex(4)}"
    stack.container.memories.remember(user, content="exported without credentials", category="general", metadata={})
    exported = run_script(stack, "users.py", "export", "--user", user, environment=bare_shell)
    assert exported.returncode == 0, exported.stderr
    assert "exported without credentials" in exported.stdout


@pytest.mark.parametrize(
    ("script", "args", "prefix"),
    [("api_keys.py", ("list",), "api_keys: "), ("users.py", ("export", "--user", "nobody"), "users: ")],
)
def test_nothing_listening_at_the_endpoint_says_so(
    stack: RunningStack, bare_shell: dict[str, str | None], script: str, args: tuple[str, ...], prefix: str
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = run_script(stack, script, *args, environment=bare_shell, endpoint_url=endpoint)
    line = failure_line(result, prefix)
    assert f"nothing answers at {endpoint}" in line
    assert "make run" in line


def test_a_missing_table_names_it_and_the_environment(stack: RunningStack, bare_shell: dict[str, str | None]) -> None:
    env = f"absent{secrets.token_hex(3)}"
    result = run_script(stack, "api_keys.py", "list", environment=bare_shell, env_name=env)
    line = failure_line(result, "api_keys: ")
    assert f"no table pai-api-keys-{env}" in line
    assert f"PAI_ENV={env}" in line


def test_users_against_a_missing_stack_says_what_is_missing(
    stack: RunningStack, bare_shell: dict[str, str | None]
) -> None:
    env = f"absent{secrets.token_hex(3)}"
    result = run_script(stack, "users.py", "export", "--user", "nobody", environment=bare_shell, env_name=env)
    line = failure_line(result, "users: ")
    assert f"has no pai-{env} tables" in line


def test_no_credentials_for_a_remote_endpoint_says_so(stack: RunningStack, bare_shell: dict[str, str | None]) -> None:
    """Not loopback, so the standard chain applies, and it has nothing: refused before any request
    is sent (192.0.2.1 is a documentation address, never contacted)."""
    shell = {**bare_shell, "AWS_PROFILE": None}
    result = run_script(stack, "api_keys.py", "list", environment=shell, endpoint_url="http://192.0.2.1:4566")
    line = failure_line(result, "api_keys: ")
    assert "no usable AWS credentials" in line
