"""POST /memory (store, retrieve, list, delete) and GET /health."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import create_app, json_body, json_response, logger, memory_json, request_owner
from pai_core.bootstrap import get_container
from pai_core.models import iso_utc
from pai_core.requests import DeleteMemory, ListMemories, RetrieveMemory, StoreMemory, parse_memory_command

app = create_app()


@app.post("/memory")
def memory() -> Response[str]:
    owner = request_owner(app)
    command = parse_memory_command(json_body(app))
    container = get_container()
    service = container.memories
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


@app.get("/health")
def health() -> Response[str]:
    get_container().storage_probe.check()
    return json_response(200, {"status": "ok"})


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
