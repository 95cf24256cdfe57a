"""POST /memory (store, store_many, retrieve, list, update, history, delete), POST /account (export,
forget) and GET /health."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import (
    create_app,
    document_json,
    idempotent,
    json_body,
    json_response,
    logger,
    memory_json,
    request_owner,
    version_json,
)
from handlers._observability import observed_http
from pai_core.bootstrap import get_container
from pai_core.models import JsonObject, Memory, iso_utc
from pai_core.requests import (
    DeleteMemory,
    ExportAccount,
    ForgetAccount,
    ListMemories,
    MemoryCommand,
    MemoryHistory,
    RetrieveMemory,
    StoreManyMemories,
    StoreMemory,
    UpdateMemory,
    parse_account_command,
    parse_memory_command,
)
from pai_core.services import AccountExport

app = create_app()

# The actions that store something: an Idempotency-Key makes a repeat of one return the first answer
# (handlers/_http.idempotent). The others do not act on the header (a malformed one is still a 400).
STORING_COMMANDS: tuple[type[MemoryCommand], ...] = (StoreMemory, StoreManyMemories, UpdateMemory)


@app.post("/memory")
def memory() -> Response[str]:
    owner = request_owner(app)
    body = json_body(app)
    command = parse_memory_command(body)
    return idempotent(
        app,
        owner,
        body=body,
        run=lambda: run_memory_command(owner, command),
        stores=isinstance(command, STORING_COMMANDS),
    )


def run_memory_command(owner: str, command: MemoryCommand) -> Response[str]:  # noqa: PLR0911 (one answer per action)
    service = get_container().memories
    match command:
        case StoreMemory(content=content, category=category, metadata=metadata):
            stored = service.remember(owner, content=content, category=category, metadata=metadata)
            return json_response(201, stored_json(stored))
        case StoreManyMemories(items=items):
            return json_response(201, {"items": [stored_json(m) for m in service.remember_many(owner, items)]})
        case RetrieveMemory(id=memory_id):
            return json_response(200, memory_json(service.recall(owner, memory_id)))
        case ListMemories(category=category, limit=limit, cursor=cursor, origin=origin):
            page = service.list_memories(owner, category=category, limit=limit, cursor=cursor, origin=origin)
            return json_response(200, {"items": [memory_json(m) for m in page.items], "cursor": page.cursor})
        case UpdateMemory(id=memory_id, content=content, category=category, metadata=metadata):
            updated = service.update(owner, memory_id, content=content, category=category, metadata=metadata)
            return json_response(200, memory_json(updated))
        case MemoryHistory(id=memory_id):
            versions = service.history(owner, memory_id)
            return json_response(200, {"id": memory_id, "versions": [version_json(v) for v in versions]})
        case DeleteMemory(id=memory_id):
            service.forget(owner, memory_id)
            return json_response(200, {"id": memory_id, "deleted": True})


def stored_json(memory: Memory) -> JsonObject:
    return {"id": memory.id, "category": memory.category, "createdAt": iso_utc(memory.created_at)}


@app.post("/account")
def account() -> Response[str]:
    owner = request_owner(app)
    command = parse_account_command(json_body(app))
    service = get_container().account
    match command:
        case ExportAccount(cursor=cursor):
            return json_response(200, export_json(owner, service.export_page(owner, cursor=cursor)))
        case ForgetAccount():
            report = service.forget(owner)
            return json_response(
                200,
                {
                    "forgotten": True,
                    "deleted": {
                        "memories": report.memories,
                        "conversationTurns": report.conversation_turns,
                        "snapshotVersions": report.snapshot_versions,
                        "keyVersions": report.key_versions,
                        "apiKeys": report.api_keys,
                        "documents": report.documents,
                    },
                },
            )


def export_json(owner: str, export: AccountExport) -> JsonObject:
    return {
        "userId": owner,
        "memories": [
            {**memory_json(memory), "history": [version_json(v) for v in export.histories[memory.id]]}
            for memory in export.memories
        ],
        "documents": [{**document_json(document), "text": text} for document, text in export.documents],
        "conversations": [
            {"sessionId": session_id, "role": turn.role, "content": turn.content, "createdAt": iso_utc(turn.at)}
            for session_id, turn in export.turns
        ],
        "cursor": export.cursor,
    }


@app.get("/health")
def health() -> Response[str]:
    get_container().storage_probe.check()
    return json_response(200, {"status": "ok"})


@observed_http
@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
