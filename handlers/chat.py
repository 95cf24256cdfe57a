"""POST /chat, plain or as server-sent events ("stream": true).

Where the runtime hands the function a response stream (`context.response_stream`: the streamed
chat's Function URL, whose adapter handlers/chat_stream_server.py gives it one, in AWS and locally),
events are written as the model produces them. API Gateway HTTP APIs buffer a Lambda's response, so
through the API (and the local gateway, which emulates it) the same events arrive in one body once
the reply is complete.

With an Idempotency-Key, a repeat gets the first answer (handlers/_http.idempotent): the same JSON,
or for a streamed chat the same events in one body (where the first was streamed as it came, its
reply in one "delta" event, then the same "done" event).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import (
    EVENT_STREAM_HEADERS,
    create_app,
    error_json,
    event_stream_response,
    format_event,
    idempotent,
    json_body,
    json_response,
    logger,
    request_owner,
    status_of,
)
from handlers._observability import observed_http
from pai_core.bootstrap import get_container
from pai_core.errors import PaiError
from pai_core.models import ChatReply, JsonObject, Source, TextDelta
from pai_core.requests import ChatRequest, parse_chat_request

app = create_app()


class ResponseStream(Protocol):
    def start(self, status: int, headers: dict[str, str]) -> None: ...

    def write(self, text: str) -> None: ...


def reply_json(reply: ChatReply) -> JsonObject:
    return {
        "sessionId": reply.session_id,
        "reply": reply.reply,
        "sources": [source_json(source) for source in reply.sources],
        "model": reply.model,
        "usage": {"inputTokens": reply.usage.input_tokens, "outputTokens": reply.usage.output_tokens},
        "learning": reply.learning,
    }


def source_json(source: Source) -> JsonObject:
    shaped: JsonObject = {"kind": source.kind, "id": source.id, "score": source.score}
    if source.kind == "document":
        shaped.update(documentId=source.document_id, name=source.name, page=source.page)
    return shaped


def events(items: Iterable[TextDelta | ChatReply]) -> Iterator[tuple[str, JsonObject]]:
    for item in items:
        if isinstance(item, TextDelta):
            yield "delta", {"text": item.text}
        else:
            yield "done", reply_json(item)


@app.post("/chat")
def chat() -> Response[str]:
    owner = request_owner(app)
    body = json_body(app)
    request = parse_chat_request(body)
    return idempotent(app, owner, body=body, run=lambda: answer(owner, request))


def answer(owner: str, request: ChatRequest) -> Response[str]:
    container = get_container()
    turn: dict[str, Any] = {
        "message": request.message,
        "session_id": request.session_id,
        "use_memory": request.use_memory,
        "top_k": request.top_k,
        "learn": request.learn,
    }
    if not request.stream:
        return json_response(200, reply_json(container.chat.chat(owner, **turn)))

    # Validation and storage errors raise here, before any event, as plain JSON error responses.
    items = container.chat.chat_stream(owner, **turn)
    sink: ResponseStream | None = getattr(app.lambda_context, "response_stream", None)
    if sink is None:
        return event_stream_response(events(items))
    sink.start(200, EVENT_STREAM_HEADERS)
    done: JsonObject | None = None
    try:
        for name, data in events(items):
            sink.write(format_event(name, data))
            if name == "done":
                done = data
    except Exception as exc:
        # The status line is gone already: the stream ends with an error event instead.
        if not isinstance(exc, PaiError):
            logger.exception("unhandled error while streaming", exc_info=exc)
        sink.write(format_event("error", error_json(exc)))
        # The runtime sends nothing more once the stream has started; the status tells the
        # idempotency wrapper that this answer is no answer to keep.
        status = status_of(exc) if isinstance(exc, PaiError) else None
        return Response(status_code=int(status or 500), body="", headers=EVENT_STREAM_HEADERS)
    # What the client was sent, as one body: what a repeat with the same Idempotency-Key gets.
    replay = [] if done is None else [("delta", {"text": done["reply"]}), ("done", done)]
    return event_stream_response(replay)


@observed_http
@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
