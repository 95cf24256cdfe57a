"""`pai`: PAI from the terminal (../shared/API.md, "Clients").

Exit status: 0 success; 1 the API answered an error or could not be reached (one line on stderr);
2 a usage error (click's own). Data goes to stdout (the API's JSON with --json), progress and
messages to stderr, so `pai search x --json | jq` sees JSON only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx2
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pai_client import config
from pai_client.api import DEFAULT_URL, Api, ApiError, JsonObject, Settings
from pai_client.config import ConfigError
from pai_client.notes import NotesError, batches, idempotency_key, read_notes, upload_body

app = typer.Typer(
    name="pai",
    help="PAI, your private assistant with memory, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
memories_app = typer.Typer(help="Browse and delete memories.", no_args_is_help=True)
docs_app = typer.Typer(help="Your documents in the knowledge base.", no_args_is_help=True)
app.add_typer(memories_app, name="memories")
app.add_typer(docs_app, name="docs")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SNIPPET = 70  # characters of a memory shown under a chat reply
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a human layout.")]
CategoryOption = Annotated[str | None, typer.Option("--category", "-c", help="Category ([a-z0-9_-], 1..64).")]


class Failed(Exception):
    """A failure already described in one line (not an API answer)."""


@app.callback()
def _main(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Use this profile from `pai configure` (or PAI_PROFILE).")
    ] = None,
) -> None:
    ctx.meta["pai_profile"] = profile


def _settings(ctx: typer.Context) -> Settings:
    try:
        return Settings.from_env(profile_name=ctx.meta.get("pai_profile"))
    except ConfigError as exc:
        raise Failed(str(exc)) from exc


def _api(ctx: typer.Context) -> Api:
    # Tests put an httpx2 transport in ctx.obj: the CLI then answers from it instead of the network.
    transport = ctx.obj if isinstance(ctx.obj, httpx2.BaseTransport) else None
    return Api(_settings(ctx), transport=transport)


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """Every expected failure becomes one line on stderr and exit status 1: never a traceback."""
    try:
        yield
    except ApiError as exc:
        typer.echo(f"pai: {exc.line()}", err=True)
        if exc.status == 401:
            typer.echo("pai: check PAI_API_KEY (or the key in .pai/api-key) and PAI_API_URL", err=True)
        raise typer.Exit(1) from None
    except (Failed, NotesError, ConfigError) as exc:
        typer.echo(f"pai: {exc}", err=True)
        raise typer.Exit(1) from None


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _plain(text: str, style: str = "") -> Text:
    """User and API text shown as is: never read as rich markup."""
    return Text(text, style=style)


# Memories ------------------------------------------------------------------------------------------


@app.command()
def remember(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="What to remember ('-' reads it from stdin).")],
    category: CategoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Store a memory and print its id."""
    content = sys.stdin.read().strip() if text == "-" else text
    with _failures(), _api(ctx) as api:
        result = api.remember(content, category)
    if as_json:
        _print_json(result)
    else:
        typer.echo(result.get("id", ""))


@memories_app.command("list")
def memories_list(
    ctx: typer.Context,
    category: CategoryOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The cursor a previous page printed.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List memories, newest first."""
    with _failures(), _api(ctx) as api:
        page = api.list_memories(category, limit, cursor)
    if as_json:
        _print_json(page)
        return
    items = page.get("items") or []
    for memory in items:
        header = f"{memory.get('id')}  {memory.get('createdAt', '')}  {memory.get('category', '')}"
        if memory.get("origin") and memory.get("origin") != "api":
            header += f"  ({memory['origin']})"
        out.print(_plain(header, "bold"))
        out.print(_plain(_indent(str(memory.get("content", "")))))
    if not items:
        err.print("no memories" + (f" in category {category!r}" if category else ""))
    if page.get("cursor"):
        err.print(_plain(f"more: pai memories list --cursor {page['cursor']}"))


@memories_app.command("rm")
def memories_rm(
    ctx: typer.Context,
    memory_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Ids of the memories to delete.")],
    as_json: JsonFlag = False,
) -> None:
    """Delete memories."""
    _delete_each(ctx, memory_ids, lambda api, memory_id: api.forget(memory_id), as_json=as_json)


def _delete_each(ctx: typer.Context, ids: list[str], delete: Callable[[Api, str], Any], *, as_json: bool) -> None:
    """Deletes one id after the other, saying so for each (or, with --json, printing the answers)."""
    results = []
    with _failures(), _api(ctx) as api:
        for item_id in ids:
            results.append(delete(api, item_id))
            if not as_json:
                typer.echo(f"deleted {item_id}")
    if as_json:
        _print_json(results[0] if len(results) == 1 else results)


# Search and chat -----------------------------------------------------------------------------------


@app.command()
def search(  # noqa: PLR0917  (typer reads its options from the signature)
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=50, help="How many results.")] = 5,
    category: CategoryOption = None,
    memories_only: Annotated[bool, typer.Option("--memories", help="Memories only.")] = False,
    documents_only: Annotated[bool, typer.Option("--documents", help="Document passages only.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search memories and document passages, most relevant first."""
    sources = [name for name, on in (("memories", memories_only), ("documents", documents_only)) if on]
    with _failures(), _api(ctx) as api:
        result = api.search(query, top_k, category, sources or None)
    if as_json:
        _print_json(result)
        return
    results = result.get("results") or []
    for rank, item in enumerate(results, start=1):
        out.print(_plain(f"{rank}. {float(item.get('score', 0.0)):.3f}  {_source_label(item)}", "bold"))
        out.print(_plain(_indent(str(item.get("content", "")))))
    if not results:
        err.print("no results")


def _source_label(item: JsonObject) -> str:
    if item.get("kind") == "document":
        label = f"document {item.get('name') or item.get('documentId')}"
        if item.get("page"):
            label += f" p.{item['page']}"
        if item.get("heading"):
            label += f" ({item['heading']})"
        return label
    category = f" [{item['category']}]" if item.get("category") else ""
    return f"memory {item.get('id')}{category}"


def _count(number: object, singular: str) -> str:
    if number is None:
        return f"? {singular}s"
    plural = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
    return f"{number} {singular if number == 1 else plural}"


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines() or [""])


@app.command()
def chat(
    ctx: typer.Context,
    message: Annotated[str | None, typer.Argument(help="One message; without it, a conversation.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Continue this session.")] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Answer without your memories.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Chat with your assistant: the reply streams as it comes, its sources under it."""
    options: JsonObject = {"useMemory": not no_memory}
    with _failures(), _api(ctx) as api:
        if message is None:
            _conversation(api, session, options)
            return
        body = {"message": message, **options, **({"sessionId": session} if session else {})}
        if as_json:
            _print_json(api.chat(body))
            return
        done = _stream_reply(api, body)
        if done.get("sessionId"):
            err.print(_plain(f"session: {done['sessionId']}  (continue with --session {done['sessionId']})"))


def _stream_reply(api: Api, body: JsonObject) -> JsonObject:
    """Prints the reply as its pieces arrive, then its sources; returns the final event's fields."""
    done: JsonObject = {}
    streamed = False
    try:
        for name, data in api.chat_stream(body):
            if name == "delta":
                out.print(_plain(str(data.get("text", ""))), end="")
                streamed = True
                sys.stdout.flush()
            elif name == "done":
                done = data
    finally:
        if streamed and not done:  # broken off: end the partial line before the error or prompt
            out.print()
    if not streamed and done.get("reply"):
        out.print(_plain(str(done["reply"])), end="")
    out.print()
    _print_sources(api, done.get("sources") or [])
    return done


def _print_sources(api: Api, sources: list[JsonObject]) -> None:
    """One line per source: a document by name and page, a memory by the start of its content (a
    chat source carries only the memory's id, so it is read back; its id alone if that fails)."""
    for source in sources:
        score = f"{float(source.get('score', 0.0)):.2f}"
        if source.get("kind") == "document":
            label = _source_label(source)
        else:
            label = f"memory {source.get('id')}"
            with contextlib.suppress(ApiError):
                content = " ".join(str(api.retrieve(str(source.get("id"))).get("content", "")).split())
                label += f": {content[:SNIPPET] + '...' if len(content) > SNIPPET else content}"
        out.print(_plain(f"  [{score}] {label}", "dim"))


def _conversation(api: Api, session: str | None, options: JsonObject) -> None:
    """The interactive loop: Ctrl-C stops a reply (or clears the line) and keeps the conversation,
    Ctrl-D or /exit leaves; the session carries over from turn to turn."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    err.print(f"PAI at {api.settings.url}. Ctrl-C stops a reply, Ctrl-D leaves.")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            err.print()
            return
        except KeyboardInterrupt:
            err.print()
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        body = {"message": text, **options, **({"sessionId": session} if session else {})}
        out.print(_plain("pai> ", "bold cyan"), end="")
        try:
            done = _stream_reply(api, body)
        except KeyboardInterrupt:
            out.print()
            err.print("(reply interrupted)")
            continue
        except ApiError as exc:
            out.print()
            typer.echo(f"pai: {exc.line()}", err=True)
            continue
        session = done.get("sessionId") or session


# Documents -----------------------------------------------------------------------------------------


class RateColumn(ProgressColumn):
    """Items per second, for progress bars counting notes or files."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


def _progress(unit: str) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@docs_app.command("add")
def docs_add(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", exists=True, dir_okay=False, readable=True)],
    category: CategoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload files (.txt .md .html .pdf .docx); re-adding the same file stores it once."""
    uploaded: list[JsonObject] = []
    with _failures(), _api(ctx) as api, _progress("files") as progress:
        task = progress.add_task("uploading", total=len(files))
        for path in files:
            body = upload_body(path, category)
            document = api.upload(body, idempotency_key=idempotency_key("doc", body))
            uploaded.append(document)
            progress.advance(task)
            if not as_json:
                note = " (already there)" if document.get("duplicate") else ""
                pages = f", {document['pages']} pages" if document.get("pages") else ""
                passages = document.get("passages")
                detail = f"{_count(passages, 'passage')}{pages}" if passages is not None else "processing"
                out.print(_plain(f"{document.get('id')}  {path.name}  {detail}{note}"))
    if as_json:
        _print_json(uploaded[0] if len(uploaded) == 1 else uploaded)


@docs_app.command("list")
def docs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The cursor a previous page printed.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List documents, newest first."""
    with _failures(), _api(ctx) as api:
        page = api.list_documents(limit, cursor)
    if as_json:
        _print_json(page)
        return
    items = page.get("items") or []
    for document in items:
        pages = f"  {document['pages']} pages" if document.get("pages") else ""
        line = (
            f"{document.get('id')}  {document.get('name')}  {document.get('contentType')}  "
            f"{document.get('bytes')} bytes{pages}  {_count(document.get('passages'), 'passage')}  "
            f"{document.get('createdAt')}"
        )
        out.print(_plain(line))
    if not items:
        err.print("no documents")
    if page.get("cursor"):
        err.print(_plain(f"more: pai docs list --cursor {page['cursor']}"))


@docs_app.command("rm")
def docs_rm(
    ctx: typer.Context,
    document_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    as_json: JsonFlag = False,
) -> None:
    """Delete documents (their passages leave search and chat)."""
    _delete_each(ctx, document_ids, lambda api, document_id: api.delete_document(document_id), as_json=as_json)


# Import and export ---------------------------------------------------------------------------------


@app.command("import")
def import_notes(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSON lines or text.")],
    category: CategoryOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Store notes in bulk: one memory per JSON line ({"content", "category"?, "metadata"?}) or per
    paragraph of a text/Markdown file. Running it again on the same file stores nothing twice."""
    with _failures():
        items = read_notes(file, category)
        if not items:
            raise Failed(f"{file}: no notes in it")
        groups = batches(items)
        stored: list[JsonObject] = []
        started = time.monotonic()
        with _api(ctx) as api, _progress("notes") as progress:
            task = progress.add_task(f"importing {file.name}", total=len(items))
            for group in groups:
                body = {"action": "store_many", "items": group}
                try:
                    answer = api.store_many(group, idempotency_key=idempotency_key("import", body))
                except ApiError as exc:
                    raise _in_file(exc, file, offset=len(stored)) from None
                stored.extend(answer.get("items") or [])
                progress.advance(task, len(group))
    if as_json:
        _print_json({"file": str(file), "notes": len(items), "requests": len(groups), "items": stored})
        return
    elapsed = time.monotonic() - started
    notes, requests = _count(len(stored), "note"), _count(len(groups), "request")
    err.print(
        _plain(
            f"imported {notes} from {file.name} in {requests}, {elapsed:.1f} s "
            "(running it again on the same file stores nothing twice)"
        )
    )


def _in_file(exc: ApiError, file: Path, offset: int) -> ApiError:
    """An error about `items[i]` of one request, told as the note of the file it came from; the
    notes before it are stored (and a re-run will not store them again)."""
    match = re.search(r"\[field: items\[(\d+)\]\.?([^\]]*)\]", exc.message)
    if match is None:
        return exc
    number = offset + int(match.group(1)) + 1
    where = f"note {number} of {file.name}" + (f" ({match.group(2)})" if match.group(2) else "")
    message = exc.message[: match.start()].rstrip() + f" [{where}; the {offset} before it are stored]"
    return ApiError(message, status=exc.status, code=exc.code)


@app.command()
def export(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE (created 0600).")] = None,
) -> None:
    """Everything you stored, decrypted, as one JSON document."""
    merged: dict[str, Any] = {"userId": None, "memories": [], "documents": [], "conversations": []}
    with _failures(), _api(ctx) as api:
        cursor: str | None = None
        while True:
            page = api.export_page(cursor)
            merged["userId"] = page.get("userId", merged["userId"])
            for name in ("memories", "documents", "conversations"):
                merged[name].extend(page.get(name) or [])
            cursor = page.get("cursor")
            if not cursor:
                break
        text = json.dumps(merged, ensure_ascii=False, indent=2) + "\n"
        if output is None:
            typer.echo(text, nl=False)
            return
        try:
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            raise Failed(f"{output}: {exc.strerror or exc}") from exc
    counts = ", ".join(
        _count(len(merged[name]), singular) for name, singular in (("memories", "memory"), ("documents", "document"))
    )
    counts += f", {_count(len(merged['conversations']), 'conversation turn')}"
    err.print(_plain(f"exported {counts} to {output}"))


@app.command()
def mcp(ctx: typer.Context) -> None:
    """Serve your memory to MCP clients (Claude Desktop, Cursor, IDEs) on stdio."""
    from pai_client.mcp_server import serve

    with _failures():
        settings = _settings(ctx)
        serve(settings)


@app.command()
def configure(
    name: Annotated[str, typer.Option("--profile", "-p", help="The profile to create or change.")] = "default",
    url: Annotated[str | None, typer.Option(help="The API's URL (a deployment prints it).")] = None,
    *,
    stream_url: Annotated[
        str | None,
        typer.Option(
            "--stream-url",
            help="Where streamed chats go (a deployment's ChatStreamUrl); '' removes it. Default: the API URL.",
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="The key; '-' reads it from stdin; asked for (hidden) if absent.")
    ] = None,
    make_default: Annotated[bool, typer.Option("--default", help="Use this profile when none is named.")] = False,
    show: Annotated[bool, typer.Option("--show", help="List the profiles (never their keys) and exit.")] = False,
) -> None:
    """Save a named profile (URL and key) in the config file, created readable by you only."""
    environ = os.environ
    path = config.config_path(environ)
    with _failures():
        data = config.load(path)
        if show:
            for profile_name, entry in sorted(data["profiles"].items()):
                mark = "*" if profile_name == data.get("default") else " "
                key = config.key_id(entry.get("apiKey") if isinstance(entry, dict) else None)
                url_shown = entry.get("url") if isinstance(entry, dict) else "?"
                stream_shown = entry.get("streamUrl") if isinstance(entry, dict) else None
                streamed = f"  stream: {stream_shown}" if stream_shown else ""
                typer.echo(f"{mark} {profile_name}  {url_shown}{streamed}  ({key})")
            if not data["profiles"]:
                err.print(_plain(f"no profiles in {path}"))
            return
        if not config.PROFILE_NAME.fullmatch(name):
            raise typer.BadParameter("letters, digits, '_' and '-', 1..64 characters", param_hint="--profile")
        entry = data["profiles"].get(name) or {}
        url = (url or entry.get("url") or typer.prompt("API URL", default=DEFAULT_URL)).rstrip("/")
        if api_key == "-":
            api_key = sys.stdin.readline().strip()
        elif api_key is None and not entry.get("apiKey"):
            api_key = typer.prompt("API key", hide_input=True).strip()
        data["profiles"][name] = {"url": url, "apiKey": api_key or entry.get("apiKey")}
        streaming = entry.get("streamUrl") if stream_url is None else stream_url.rstrip("/")
        if streaming:
            data["profiles"][name]["streamUrl"] = streaming
        if make_default or not data.get("default"):
            data["default"] = name
        config.save(path, data)
    key = config.key_id(data["profiles"][name]["apiKey"])
    err.print(_plain(f"saved profile {name!r} ({url}, {key}) in {path}"))


def main() -> int:
    """The console script: click's exit codes (2 for usage), ours for everything else."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("", err=True)
        return 130
    return 0
