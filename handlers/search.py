"""POST /search."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import create_app, json_body, json_response, logger, memory_json, request_owner
from pai_core.bootstrap import get_container
from pai_core.requests import parse_search_query

app = create_app()


@app.post("/search")
def search() -> Response[str]:
    owner = request_owner(app)
    query = parse_search_query(json_body(app))
    container = get_container()
    hits = container.memories.search(
        owner, query.query, top=query.top_k, category=query.category, min_score=query.min_score
    )
    return json_response(200, {"results": [{**memory_json(hit.memory), "score": hit.score} for hit in hits]})


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
