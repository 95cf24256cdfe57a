"""The `pai` CLI and `pai mcp` against the real local stack, run as a person (or an MCP client) runs
them: a subprocess with PAI_API_URL and PAI_API_KEY, its output parsed, its exit status checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from pai_core.config import REPO_ROOT
from pai_local.emulator import free_port
from pai_local.stack import RunningStack

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(url: str, key: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PAI_")}
    return {**env, "PAI_API_URL": url, "PAI_API_KEY": key, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def user_key(stack: RunningStack) -> str:
    """A user of its own, so that listings and exports hold only this test's data."""
    return stack.container.api_keys.issue(f"cli-{uuid.uuid4().hex[:12]}", "cli tests").key


@pytest.fixture
def pai(stack: RunningStack, user_key: str, tmp_path: Path) -> Run:
    def run(*args: str, key: str | None = None, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pai_client", *args],
            env=cli_env(url or stack.gateway_url, key or user_key),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a run that exited 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("pai: ")
    return result.stderr.splitlines()[0]


def test_remember_search_list_and_rm(pai: Run) -> None:
    word = f"quokka{uuid.uuid4().hex[:6]}"
    memory_id = ok(pai("remember", f"My favourite animal is the {word}", "--category", "animals")).stdout.strip()
    assert memory_id

    found = as_json(pai("search", word, "--top-k", "3", "--json"))
    assert found["results"][0]["id"] == memory_id
    assert found["results"][0]["kind"] == "memory"
    human = ok(pai("search", word)).stdout
    assert f"memory {memory_id} [animals]" in human
    assert word in human

    listed = as_json(pai("memories", "list", "--category", "animals", "--json"))
    assert [item["id"] for item in listed["items"]] == [memory_id]
    assert memory_id in ok(pai("memories", "list")).stdout

    assert ok(pai("memories", "rm", memory_id)).stdout.strip() == f"deleted {memory_id}"
    assert as_json(pai("memories", "list", "--json"))["items"] == []
    assert "(not_found, HTTP 404)" in failed(pai("memories", "rm", memory_id))


def test_import_of_500_notes_twice_stores_each_once(pai: Run, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    texts = [f"Note {n}: the {n}th thing I want to keep." for n in range(500)]
    notes.write_text("\n\n".join(texts) + "\n")
    first = as_json(pai("import", str(notes), "--json"))
    assert (first["notes"], first["requests"], len(first["items"])) == (500, 5, 500)

    again = as_json(pai("import", str(notes), "--json"))
    assert again["items"] == first["items"]

    stored: list[dict[str, Any]] = []
    cursor: list[str] = []
    while True:
        page = as_json(pai("memories", "list", "--limit", "100", "--json", *cursor))
        stored.extend(page["items"])
        if not page["cursor"]:
            break
        cursor = ["--cursor", page["cursor"]]
    assert len(stored) == 500
    assert {item["origin"] for item in stored} == {"import"}
    assert sorted(item["content"] for item in stored) == sorted(texts)


def test_export_holds_what_was_stored(pai: Run, tmp_path: Path) -> None:
    memory_id = ok(pai("remember", "I was born in Lisbon")).stdout.strip()
    target = tmp_path / "export.json"
    ok(pai("export", "-o", str(target)))
    exported = json.loads(target.read_text())
    assert [memory["id"] for memory in exported["memories"]] == [memory_id]
    assert exported["memories"][0]["content"] == "I was born in Lisbon"
    assert target.stat().st_mode & 0o777 == 0o600
    assert json.loads(ok(pai("export")).stdout)["memories"][0]["id"] == memory_id


def test_docs_add_list_rm(pai: Run, tmp_path: Path) -> None:
    document = tmp_path / "garden.md"
    document.write_text("# Garden\n\nThe tomatoes go in the south bed, next to the basil.\n")
    added = as_json(pai("docs", "add", str(document), "--json"))
    assert added["name"] == "garden.md"
    assert added["contentType"] == "text/markdown"
    listed = as_json(pai("docs", "list", "--json"))
    assert [item["id"] for item in listed["items"]] == [added["id"]]
    assert as_json(pai("docs", "add", str(document), "--json"))["id"] == added["id"]
    assert ok(pai("docs", "rm", added["id"])).stdout.strip() == f"deleted {added['id']}"
    assert as_json(pai("docs", "list", "--json"))["items"] == []


def test_chat_streams_a_reply_with_its_session(pai: Run) -> None:
    result = ok(pai("chat", "Say hello in one short sentence.", "--no-memory"))
    assert result.stdout.strip()
    assert "session: " in result.stderr
    session = result.stderr.split("session: ", 1)[1].split()[0]
    answer = as_json(pai("chat", "And once more, shorter.", "--session", session, "--no-memory", "--json"))
    assert answer["sessionId"] == session
    assert answer["reply"]


def test_usage_errors_exit_2(pai: Run) -> None:
    assert pai("search").returncode == 2
    assert pai("memories", "list", "--limit", "1000").returncode == 2


def test_unreachable_api_is_one_line_and_exit_1(pai: Run) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert failed(pai("search", "anything", url=url)) == f"pai: cannot reach the PAI API at {url}: connection refused"


def test_a_revoked_key_is_one_line_and_exit_1(pai: Run, stack: RunningStack) -> None:
    issued = stack.container.api_keys.issue(f"cli-revoked-{uuid.uuid4().hex[:8]}", "cli tests")
    ok(pai("memories", "list", key=issued.key))
    stack.container.api_keys.revoke(issued.info.key_id)
    stack.container.api_keys.forget_checked()  # as if AuthCacheSeconds had passed
    line = failed(pai("memories", "list", key=issued.key))
    assert "HTTP 401" in line
    assert issued.key not in line


def test_mcp_server_over_stdio(stack: RunningStack, user_key: str) -> None:
    word = f"wombat{uuid.uuid4().hex[:6]}"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "pai_client", "mcp"], env=cli_env(stack.gateway_url, user_key)
    )

    async def session() -> None:
        async with Client(params) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert tools == {"remember", "search", "list_memories", "forget"}
            stored = await client.call_tool("remember", {"content": f"My pet is a {word}", "category": "pets"})
            assert not stored.is_error, stored
            memory_id = json.loads(stored.content[0].text)["id"]  # type: ignore[union-attr]
            found = await client.call_tool("search", {"query": word, "top_k": 2, "sources": ["memories"]})
            assert json.loads(found.content[0].text)["results"][0]["id"] == memory_id  # type: ignore[union-attr]
            listed = await client.call_tool("list_memories", {"category": "pets"})
            assert [m["id"] for m in json.loads(listed.content[0].text)["items"]] == [memory_id]  # type: ignore[union-attr]
            gone = await client.call_tool("forget", {"id": memory_id})
            assert json.loads(gone.content[0].text)["deleted"] is True  # type: ignore[union-attr]
            again = await client.call_tool("forget", {"id": memory_id})
            assert again.is_error
            assert "HTTP 404" in again.content[0].text  # type: ignore[union-attr]

    anyio.run(session)


def test_a_configured_profile_reaches_the_stack(pai: Run, stack: RunningStack, user_key: str, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    env = {**cli_env("", ""), "PAI_CONFIG": str(config)}
    del env["PAI_API_URL"], env["PAI_API_KEY"]
    made = subprocess.run(
        [sys.executable, "-m", "pai_client", "configure", "-p", "here", "--url", stack.gateway_url, "--api-key", "-"],
        input=user_key,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert user_key not in made.stdout + made.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    remembered = subprocess.run(
        [sys.executable, "-m", "pai_client", "--profile", "here", "remember", "Profiles work", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    memory_id = json.loads(ok(remembered).stdout)["id"]
    assert [item["id"] for item in as_json(pai("memories", "list", "--json"))["items"]] == [memory_id]
