"""POST /documents (upload, list, get, delete): the knowledge base's files."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import create_app, document_json, idempotent, json_body, json_response, logger, request_owner
from handlers._observability import observed_http
from pai_core.bootstrap import get_container
from pai_core.requests import (
    DeleteDocument,
    DocumentCommand,
    GetDocument,
    ListDocuments,
    UploadDocument,
    parse_document_command,
)

app = create_app()

# A 4 MiB file is 5.34 MiB in base64, with room for the other fields: Lambda's own 6 MB request bound.
MAX_DOCUMENT_BODY_BYTES = 6 * 1024 * 1024


@app.post("/documents")
def documents() -> Response[str]:
    owner = request_owner(app)
    body = json_body(app, max_bytes=MAX_DOCUMENT_BODY_BYTES)
    command = parse_document_command(body)
    return idempotent(
        app,
        owner,
        body=body,
        run=lambda: run_document_command(owner, command),
        stores=isinstance(command, UploadDocument),
    )


def run_document_command(owner: str, command: DocumentCommand) -> Response[str]:
    service = get_container().documents
    match command:
        case UploadDocument(name=name, content_type=content_type, content=content, category=category):
            upload = service.upload(owner, name=name, content_type=content_type, content=content, category=category)
            if upload.duplicate:
                return json_response(200, {**document_json(upload.document), "duplicate": True})
            # 202: accepted, read off the request path by the ingest function (handlers/document_ingest.py).
            return json_response(202 if upload.document.status == "processing" else 201, document_json(upload.document))
        case ListDocuments(limit=limit, cursor=cursor):
            page = service.list_documents(owner, limit=limit, cursor=cursor)
            return json_response(200, {"items": [document_json(d) for d in page.items], "cursor": page.cursor})
        case GetDocument(id=document_id):
            return json_response(200, document_json(service.get(owner, document_id)))
        case DeleteDocument(id=document_id):
            service.delete(owner, document_id)
            return json_response(200, {"id": document_id, "deleted": True})


@observed_http
@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
