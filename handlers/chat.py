"""POST /chat."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import create_app, event_stream_response, json_body, json_response, logger
from pai_core.bootstrap import get_container
from pai_core.requests import parse_chat_request

app = create_app()


@app.post("/chat")
def chat() -> Response[str]:
    request = parse_chat_request(json_body(app))
    container = get_container()
    reply = container.chat.chat(
        container.settings.owner,
        message=request.message,
        session_id=request.session_id,
        use_memory=request.use_memory,
        top_k=request.top_k,
    )
    payload = {
        "sessionId": reply.session_id,
        "reply": reply.reply,
        "sources": [{"id": source.id, "score": source.score} for source in reply.sources],
        "model": reply.model,
        "usage": {"inputTokens": reply.usage.input_tokens, "outputTokens": reply.usage.output_tokens},
    }
    if request.stream:
        # API Gateway HTTP APIs buffer a Lambda's response, so the events arrive together: the
        # reply text, then the same fields as the JSON response.
        return event_stream_response([("delta", {"text": reply.reply}), ("done", payload)])
    return json_response(200, payload)


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
