"""POST /memory (store, retrieve, list, delete), POST /account (export, forget) and GET /health."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import create_app, idempotent, json_body, json_response, logger, memory_json, request_owner
from pai_core.bootstrap import get_container
from pai_core.models import JsonObject, iso_utc
from pai_core.requests import (
    DeleteMemory,
    ExportAccount,
    ForgetAccount,
    ListMemories,
    MemoryCommand,
    RetrieveMemory,
    StoreMemory,
    parse_account_command,
    parse_memory_command,
)
from pai_core.services import AccountExport

app = create_app()

# The actions that store something: an Idempotency-Key makes a repeat of one return the first answer
# (handlers/_http.idempotent). The others do not act on the header (a malformed one is still a 400).
STORING_COMMANDS: tuple[type[MemoryCommand], ...] = (StoreMemory,)


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


def run_memory_command(owner: str, command: MemoryCommand) -> Response[str]:
    service = get_container().memories
    match command:
        case StoreMemory(content=content, category=category, metadata=metadata):
            stored = service.remember(owner, content=content, category=category, metadata=metadata)
            return json_response(
                201, {"id": stored.id, "category": stored.category, "createdAt": iso_utc(stored.created_at)}
            )
        case RetrieveMemory(id=memory_id):
            return json_response(200, memory_json(service.recall(owner, memory_id)))
        case ListMemories(category=category, limit=limit, cursor=cursor):
            page = service.list_memories(owner, category=category, limit=limit, cursor=cursor)
            return json_response(200, {"items": [memory_json(m) for m in page.items], "cursor": page.cursor})
        case DeleteMemory(id=memory_id):
            service.forget(owner, memory_id)
            return json_response(200, {"id": memory_id, "deleted": True})


@app.post("/account")
def account() -> Response[str]:
    owner = request_owner(app)
    command = parse_account_command(json_body(app))
    service = get_container().account
    match command:
        case ExportAccount():
            return json_response(200, export_json(owner, service.export(owner)))
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
                    },
                },
            )


def export_json(owner: str, export: AccountExport) -> JsonObject:
    return {
        "userId": owner,
        "memories": [memory_json(memory) for memory in export.memories],
        "conversations": [
            {"sessionId": session_id, "role": turn.role, "content": turn.content, "createdAt": iso_utc(turn.at)}
            for session_id, turn in export.turns
        ],
    }


@app.get("/health")
def health() -> Response[str]:
    get_container().storage_probe.check()
    return json_response(200, {"status": "ok"})


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
