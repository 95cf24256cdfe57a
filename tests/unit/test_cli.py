"""The `pai` CLI against an in-memory API behind httpx2.MockTransport: what it sends, what it prints,
its exit codes, and the idempotency keys that make `pai import` safe to re-run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from pai_client import api
from pai_client.api import Settings
from pai_client.cli import app
from pai_client.notes import BATCH_ITEMS

KEY = "pai_test_key"
ENV = {"PAI_API_KEY": KEY, "PAI_API_URL": "http://pai.test"}


class FakeApi:
    """Just enough of the API: memories with idempotent store/store_many, search, chat, export."""

    def __init__(self) -> None:
        self.memories: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx2.Request] = []
        self.answers: dict[str, tuple[str, dict[str, Any]]] = {}  # Idempotency-Key -> (body, answer)
        self.fail: tuple[int, dict[str, Any]] | None = None

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx2.Response(401, json={"error": {"code": "unauthorized", "message": "invalid API key"}})
        if self.fail is not None:
            return httpx2.Response(self.fail[0], json=self.fail[1])
        body = json.loads(request.content)
        key = request.headers.get("idempotency-key")
        if key is not None and key in self.answers:
            sent, answer = self.answers[key]
            if sent != request.content.decode():
                return httpx2.Response(409, json={"error": {"code": "idempotency_key_reused", "message": "x"}})
            return httpx2.Response(201, json=answer)
        status, answer = self.route(request.url.path, body)
        if key is not None and status < 400:
            self.answers[key] = (request.content.decode(), answer)
        if request.url.path == "/chat" and body.get("stream"):
            events = "".join(
                f"event: delta\ndata: {json.dumps({'text': piece})}\n\n" for piece in ("Hel", "lo ", "there")
            )
            events += f"event: done\ndata: {json.dumps(answer)}\n\n"
            return httpx2.Response(200, text=events, headers={"content-type": "text/event-stream"})
        return httpx2.Response(status, json=answer)

    def route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        action = body.get("action")
        if path == "/memory" and action == "store":
            return 201, self.store(body)
        if path == "/memory" and action == "store_many":
            return 201, {"items": [self.store(item) for item in body["items"]]}
        if path == "/memory" and action == "list":
            items = list(reversed(self.memories.values()))[: body.get("limit", 20)]
            return 200, {"items": items, "cursor": None}
        if path == "/memory" and action == "retrieve":
            if body["id"] not in self.memories:
                return 404, {"error": {"code": "not_found", "message": "no such memory"}}
            return 200, self.memories[body["id"]]
        if path == "/memory" and action == "delete":
            if self.memories.pop(body["id"], None) is None:
                return 404, {"error": {"code": "not_found", "message": "no such memory"}}
            return 200, {"id": body["id"], "deleted": True}
        if path == "/search":
            results = [
                {"kind": "memory", "id": m["id"], "content": m["content"], "category": m["category"], "score": 0.5}
                for m in self.memories.values()
                if body["query"].lower() in m["content"].lower()
            ]
            return 200, {"results": results[: body.get("topK", 5)]}
        if path == "/chat":
            return 200, {
                "sessionId": body.get("sessionId", "s1"),
                "reply": "Hello there",
                "sources": [
                    {"kind": "document", "id": "p1", "documentId": "d1", "name": "a.pdf", "page": 3, "score": 1},
                    {"kind": "memory", "id": "m1", "score": 0.5},
                    {"kind": "memory", "id": "gone", "score": 0.25},
                ],
                "model": "fake",
                "usage": {"inputTokens": 1, "outputTokens": 2},
                "learning": "off",
            }
        if path == "/account":
            if body.get("cursor") is None:
                return 200, {
                    "userId": "u",
                    "memories": [{"id": "m1"}],
                    "documents": [],
                    "conversations": [],
                    "cursor": "c",
                }
            return 200, {
                "userId": "u",
                "memories": [{"id": "m2"}],
                "documents": [],
                "conversations": [],
                "cursor": None,
            }
        return 400, {"error": {"code": "invalid_input", "message": "unknown action", "field": "action"}}

    def store(self, item: dict[str, Any]) -> dict[str, Any]:
        memory_id = f"m{len(self.memories) + 1}"
        self.memories[memory_id] = {
            "id": memory_id,
            "content": item["content"],
            "category": item.get("category", "general"),
            "createdAt": "2026-11-25T00:00:00Z",
        }
        return {"id": memory_id, "category": self.memories[memory_id]["category"], "createdAt": "2026-11-25T00:00:00Z"}


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture
def pai(fake: FakeApi) -> Callable[..., Any]:
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None, transport: Any = None, stdin: str | None = None) -> Any:
        return runner.invoke(
            app, list(args), env={**ENV, **(env or {})}, obj=transport or httpx2.MockTransport(fake.handle), input=stdin
        )

    return run


def test_remember_prints_the_id_and_sends_the_key(pai: Callable[..., Any], fake: FakeApi) -> None:
    result = pai("remember", "I like tea", "--category", "food")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "m1"
    assert json.loads(fake.requests[0].content) == {"action": "store", "content": "I like tea", "category": "food"}


def test_json_output_is_the_apis_json(pai: Callable[..., Any], fake: FakeApi) -> None:
    pai("remember", "tea in the morning")
    listed = pai("memories", "list", "--json")
    assert listed.exit_code == 0
    assert json.loads(listed.stdout)["items"][0]["content"] == "tea in the morning"
    found = pai("search", "tea", "--json", "--top-k", "3")
    assert json.loads(found.stdout)["results"][0]["id"] == "m1"
    assert json.loads(fake.requests[-1].content) == {"query": "tea", "topK": 3}


def test_human_search_shows_rank_score_and_source(pai: Callable[..., Any]) -> None:
    pai("remember", "tea in the morning")
    result = pai("search", "tea")
    assert result.exit_code == 0
    assert "1. 0.500  memory m1 [general]" in result.stdout
    assert "tea in the morning" in result.stdout


def test_an_api_error_is_one_line_on_stderr_and_exit_1(pai: Callable[..., Any], fake: FakeApi) -> None:
    result = pai("memories", "rm", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "pai: no such memory (not_found, HTTP 404)"
    assert result.stdout == ""


def test_a_field_error_names_the_field(pai: Callable[..., Any], fake: FakeApi) -> None:
    fake.fail = (400, {"error": {"code": "invalid_input", "message": "too long", "field": "content"}})
    result = pai("remember", "x")
    assert result.exit_code == 1
    assert "too long [field: content] (invalid_input, HTTP 400)" in result.stderr
    assert "Traceback" not in result.output


def test_a_wrong_key_says_so(pai: Callable[..., Any]) -> None:
    result = pai("search", "x", env={"PAI_API_KEY": "wrong"})
    assert result.exit_code == 1
    assert "invalid API key (unauthorized, HTTP 401)" in result.stderr
    assert "PAI_API_KEY" in result.stderr


def test_an_unreachable_api_is_exit_1_without_traceback(pai: Callable[..., Any]) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    result = pai("search", "x", transport=httpx2.MockTransport(refuse))
    assert result.exit_code == 1
    assert result.stderr.strip() == "pai: cannot reach the PAI API at http://pai.test: connection refused"


def test_a_non_json_error_page_still_gives_one_line(pai: Callable[..., Any], fake: FakeApi) -> None:
    result = pai(
        "search", "x", transport=httpx2.MockTransport(lambda request: httpx2.Response(502, text="<html>bad</html>"))
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == "pai: Bad Gateway (error, HTTP 502)"


def test_usage_errors_exit_2(pai: Callable[..., Any]) -> None:
    assert pai("search").exit_code == 2
    assert pai("search", "x", "--top-k", "0").exit_code == 2
    assert pai("nonsense").exit_code == 2


def test_settings_come_from_one_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not this checkout's own key, which is there once `make run` has run here.
    monkeypatch.setattr(api, "CHECKOUT_KEY", tmp_path / "checkout" / ".pai" / "api-key")
    no_config = {"PAI_CONFIG": str(tmp_path / "none.json")}
    settings = Settings.from_env(no_config, cwd=tmp_path)
    assert (settings.url, settings.api_key) == ("http://127.0.0.1:8080", None)
    saved = tmp_path / ".pai" / "api-key"
    saved.parent.mkdir()
    saved.write_text("pai_saved\n")
    # make run's key, found from a subdirectory, for the local stack only
    assert Settings.from_env(no_config, cwd=tmp_path / "sub" / "dir").api_key == "pai_saved"
    remote = Settings.from_env({**no_config, "PAI_API_URL": "https://pai.example/"}, cwd=tmp_path)
    assert (remote.url, remote.api_key) == ("https://pai.example", None)
    assert "pai_saved" not in repr(Settings.from_env(no_config, cwd=tmp_path))


def test_no_key_is_a_clear_error(pai: Callable[..., Any], tmp_path: Path) -> None:
    result = pai("search", "x", env={"PAI_API_KEY": "", "PAI_API_URL": "https://pai.example"})
    assert result.exit_code == 1
    assert result.stderr.startswith("pai: no API key: set PAI_API_KEY, run `pai configure`")


def test_configure_saves_profiles_privately_and_never_shows_the_key(
    pai: Callable[..., Any], fake: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "cfg" / "config.json"
    env = {"PAI_CONFIG": str(path), "PAI_API_KEY": "", "PAI_API_URL": ""}
    secret = "pai_0123456789abcdef_" + "s" * 43
    made = pai("configure", "--profile", "cloud", "--url", "http://pai.test/", "--api-key", "-", env=env, stdin=KEY)
    assert made.exit_code == 0, made.output
    other = pai("configure", "-p", "spare", "--url", "http://spare.test", "--api-key", secret, env=env)
    assert other.exit_code == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert json.loads(path.read_text()) == {
        "default": "cloud",
        "profiles": {
            "cloud": {"url": "http://pai.test", "apiKey": KEY},
            "spare": {"url": "http://spare.test", "apiKey": secret},
        },
    }
    shown = pai("configure", "--show", env=env)
    assert shown.stdout.splitlines() == [
        "* cloud  http://pai.test  (key id test)",
        "  spare  http://spare.test  (key id 0123456789abcdef)",
    ]
    assert secret not in other.output + shown.output

    # The default profile when nothing else is set; a named one wins; env vars come as a whole.
    assert pai("remember", "x", env=env).exit_code == 0
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert pai("--profile", "spare", "remember", "x", env=env).exit_code == 1  # the fake knows only KEY
    assert fake.requests[-1].url.host == "spare.test"
    assert pai("remember", "x", env={**env, "PAI_PROFILE": "spare"}).exit_code == 1
    unknown = pai("--profile", "nope", "remember", "x", env=env)
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == f"pai: no profile 'nope' in {path} (profiles: cloud, spare)"


def test_chat_streams_the_reply_and_shows_sources(pai: Callable[..., Any], fake: FakeApi) -> None:
    pai("remember", "My cat is called Miso and she is " + "very " * 20 + "old.")
    result = pai("chat", "hi", "--session", "abc")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Hello there",
        "  [1.00] document a.pdf p.3",
        "  [0.50] memory m1: My cat is called Miso and she is very very very very very very very ve...",
        "  [0.25] memory gone",
    ]
    assert "session: abc" in result.stderr
    sent = json.loads(fake.requests[1].content)
    assert sent == {"message": "hi", "useMemory": True, "sessionId": "abc", "stream": True}
    assert fake.requests[1].headers["accept"] == "text/event-stream"


def test_chat_stream_error_event_exits_1(pai: Callable[..., Any]) -> None:
    error = {"error": {"code": "upstream_unavailable", "message": "the model stopped"}}
    body = f'event: delta\ndata: {{"text": "Hel"}}\n\nevent: error\ndata: {json.dumps(error)}\n\n'
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, text=body, headers={"content-type": "text/event-stream"})
    )
    result = pai("chat", "hi", transport=transport)
    assert result.exit_code == 1
    assert result.stdout == "Hel\n"
    assert "pai: the model stopped (upstream_unavailable)" in result.stderr


def test_interactive_chat_keeps_the_session(pai: Callable[..., Any], fake: FakeApi) -> None:
    result = pai("chat", stdin="first\nsecond\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Hello there") == 2
    first, second = (json.loads(request.content) for request in fake.requests if request.url.path == "/chat")
    assert "sessionId" not in first
    assert second["sessionId"] == "s1"


def test_import_stores_paragraphs_once_across_reruns(pai: Callable[..., Any], fake: FakeApi, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("\n\n".join(f"note number {n}\nsecond line" for n in range(250)) + "\n")
    first = pai("import", str(notes), "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["notes"], summary["requests"], len(summary["items"])) == (250, 3, 250)
    assert len(fake.memories) == 250
    keys = [request.headers["idempotency-key"] for request in fake.requests]
    assert len(set(keys)) == 3
    assert all(key.startswith("import-") and len(key) <= 128 for key in keys)
    assert [len(json.loads(r.content)["items"]) for r in fake.requests] == [BATCH_ITEMS, BATCH_ITEMS, 50]
    assert json.loads(fake.requests[0].content)["items"][0] == {"content": "note number 0\nsecond line"}

    again = pai("import", str(notes), "--json")
    assert again.exit_code == 0
    assert [request.headers["idempotency-key"] for request in fake.requests[3:]] == keys
    assert len(fake.memories) == 250
    assert json.loads(again.stdout)["items"] == summary["items"]


def test_import_json_lines_and_bad_lines(pai: Callable[..., Any], fake: FakeApi, tmp_path: Path) -> None:
    lines = tmp_path / "notes.jsonl"
    lines.write_text('{"content": "a", "category": "x", "metadata": {"k": 1}, "other": 2}\n\n{"content": "b"}\n')
    result = pai("import", str(lines), "--category", "dflt")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[0].content)["items"] == [
        {"content": "a", "category": "x", "metadata": {"k": 1}},
        {"content": "b", "category": "dflt"},
    ]
    lines.write_text('{"content": "a"}\n[1]\n')
    bad = pai("import", str(lines))
    assert bad.exit_code == 1
    assert "notes.jsonl:2:" in bad.stderr


def test_export_follows_the_cursor(pai: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "export.json"
    result = pai("export", "-o", str(target))
    assert result.exit_code == 0, result.output
    exported = json.loads(target.read_text())
    assert [m["id"] for m in exported["memories"]] == ["m1", "m2"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert json.loads(pai("export").stdout)["userId"] == "u"


def test_docs_add_sends_base64_type_and_key(pai: Callable[..., Any], fake: FakeApi, tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def documents(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(201, json={"id": "d1", "name": "a.md", "passages": 2, "pages": None})

    doc = tmp_path / "a.md"
    doc.write_text("# Title\n\nbody\n")
    result = pai("docs", "add", str(doc), transport=httpx2.MockTransport(documents))
    assert result.exit_code == 0, result.output
    sent = json.loads(seen[0].content)
    assert (sent["action"], sent["name"], sent["contentType"], sent["content"]) == (
        "upload",
        "a.md",
        "text/markdown",
        "IyBUaXRsZQoKYm9keQo=",
    )
    assert seen[0].headers["idempotency-key"].startswith("doc-")
    assert "d1  a.md  2 passages" in result.stdout
    unknown = tmp_path / "a.xyz"
    unknown.write_text("x")
    refused = pai("docs", "add", str(unknown))
    assert refused.exit_code == 1
    assert "unknown file type '.xyz'" in refused.stderr


def test_ctrl_c_stops_a_reply_and_the_conversation_goes_on(
    pai: Callable[..., Any], fake: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pai_client.api import Api

    real_stream = Api.chat_stream
    turns: list[str] = []

    def stream(self: Api, body: dict[str, Any]) -> Any:
        turns.append(body["message"])
        if body["message"] == "long":
            yield "delta", {"text": "Once upon"}
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the reply
        yield from real_stream(self, body)

    answers = iter(["long", KeyboardInterrupt, "short"])

    def typed(prompt: str) -> str:
        answer = next(answers, None)
        if answer is None:
            raise EOFError  # Ctrl-D
        if answer is KeyboardInterrupt:
            raise KeyboardInterrupt  # Ctrl-C at the prompt
        assert isinstance(answer, str)
        return answer

    monkeypatch.setattr(Api, "chat_stream", stream)
    monkeypatch.setattr("builtins.input", typed)
    result = pai("chat")
    assert result.exit_code == 0, result.output
    assert turns == ["long", "short"]
    assert "Once upon\n" in result.stdout
    assert "(reply interrupted)" in result.stderr
    assert "Hello there" in result.stdout


def test_make_setup_installs_the_pai_launcher(tmp_path: Path) -> None:
    import sys

    from pai_core.config import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import install_cli

    (launcher,) = install_cli.main(tmp_path)
    assert launcher.name == "pai"
    assert launcher.stat().st_mode & 0o111
    assert launcher.read_text().splitlines()[0] == f"#!{sys.executable}"
    assert "from pai_client.cli import main" in launcher.read_text()
    assert "$(BIN)/python scripts/install_cli.py" in (REPO_ROOT / "Makefile").read_text()


def test_the_client_alone_pins_what_the_project_locks() -> None:
    import tomllib

    from pai_core.config import REPO_ROOT

    alone = tomllib.loads((REPO_ROOT / "pai_client" / "pyproject.toml").read_text())["project"]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert alone["dependencies"] == project["optional-dependencies"]["client"]
    assert alone["scripts"] == project["scripts"] == {"pai": "pai_client.cli:main"}
    # Nothing of the server side: the client imports only its own modules and the four libraries.
    for module in (REPO_ROOT / "pai_client").glob("*.py"):
        text = module.read_text()
        assert "pai_core" not in text and "boto3" not in text and "handlers" not in text, module


def test_an_import_error_names_the_note_in_the_file(pai: Callable[..., Any], fake: FakeApi, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("\n\n".join(f"note {n}" for n in range(150)))
    answers = iter([None])

    def handle(request: httpx2.Request) -> httpx2.Response:
        if next(answers, "fail") == "fail":
            error = {"code": "invalid_input", "message": "content is too long", "field": "items[7].content"}
            return httpx2.Response(400, json={"error": error})
        return fake.handle(request)

    result = pai("import", str(notes), transport=httpx2.MockTransport(handle))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "pai: content is too long [note 108 of notes.md (content); the 100 before it are stored]"
        " (invalid_input, HTTP 400)"
    )


def test_the_reply_is_read_as_it_arrives() -> None:
    from collections.abc import Iterator

    from pai_client.api import Api

    produced: list[int] = []

    class Chunks(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for number, chunk in enumerate(
                [
                    b'event: delta\ndata: {"text": "Hel"}\n\n',
                    b'event: delta\ndata: {"text": "lo"}\n\n',
                    b"event: done\n",
                ]
            ):
                produced.append(number)
                yield chunk
            produced.append(3)
            yield b'data: {"reply": "Hello", "sources": []}\n\n'

    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, stream=Chunks(), headers={"content-type": "text/event-stream"})
    )
    seen: list[tuple[str, object, int]] = []
    with Api(Settings("http://pai.test", KEY), transport=transport) as api:
        seen.extend((name, data, produced[-1]) for name, data in api.chat_stream({"message": "hi"}))
    assert seen == [
        ("delta", {"text": "Hel"}, 0),  # before the server had sent anything more
        ("delta", {"text": "lo"}, 1),
        ("done", {"reply": "Hello", "sources": []}, 3),
    ]


def test_streamed_chats_go_to_the_profiles_stream_url_and_the_rest_to_its_api(
    pai: Callable[..., Any], fake: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    env = {"PAI_CONFIG": str(path), "PAI_API_KEY": "", "PAI_API_URL": ""}
    stream = "https://abc.lambda-url.eu-west-1.on.aws/"
    made = pai(
        "configure", "-p", "cloud", "--url", "http://pai.test", "--stream-url", stream, "--api-key", KEY, env=env
    )
    assert made.exit_code == 0, made.output
    assert json.loads(path.read_text())["profiles"]["cloud"]["streamUrl"] == stream.rstrip("/")
    assert "stream: https://abc.lambda-url.eu-west-1.on.aws" in pai("configure", "--show", env=env).stdout
    assert pai("chat", "hi", env=env).exit_code == 0
    chat = next(r for r in reversed(fake.requests) if r.url.path == "/chat")
    assert str(chat.url) == "https://abc.lambda-url.eu-west-1.on.aws/chat"
    assert chat.headers["authorization"] == f"Bearer {KEY}"
    assert pai("remember", "x", env=env).exit_code == 0
    assert fake.requests[-1].url.host == "pai.test"
    # Changing the profile's key keeps its stream URL; '' removes it.
    assert pai("configure", "-p", "cloud", "--api-key", KEY, env=env).exit_code == 0
    assert json.loads(path.read_text())["profiles"]["cloud"]["streamUrl"] == stream.rstrip("/")
    assert pai("configure", "-p", "cloud", "--stream-url", "", "--api-key", KEY, env=env).exit_code == 0
    assert "streamUrl" not in json.loads(path.read_text())["profiles"]["cloud"]


def test_a_stream_url_that_refuses_the_connection_falls_back_to_the_api(pai: Callable[..., Any], fake: FakeApi) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.port == 8081:
            raise httpx2.ConnectError("connection refused", request=request)
        return fake.handle(request)

    env = {"PAI_STREAM_URL": "http://127.0.0.1:8081"}
    result = pai("chat", "hi", env=env, transport=httpx2.MockTransport(answer))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Hello there"
    chat = next(r for r in reversed(fake.requests) if r.url.path == "/chat")
    assert chat.url.host == "pai.test"
