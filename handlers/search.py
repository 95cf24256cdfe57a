"""POST /search."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import authenticated_owner, create_app, json_body, json_response, logger, search_result_json
from handlers._observability import observed_http
from pai_core.bootstrap import get_container
from pai_core.requests import parse_search_query
from pai_core.services.retrieval import SOURCES

app = create_app()


@app.post("/search")
def search() -> Response[str]:
    owner = authenticated_owner(app)
    container = get_container()
    # The request's count (the rate limit) is written while the query is read, embedded and
    # ranked; its verdict is awaited before anything is read, and a refusal is the answer.
    with container.limits.admitting(owner) as admission:
        query = parse_search_query(json_body(app))
        hits = container.retrieval.search(
            owner,
            query.query,
            top=query.top_k,
            category=query.category,
            min_score=query.min_score,
            sources=[source for source in SOURCES if source in query.sources],
            before_fetch=admission.wait,
        )
    return json_response(200, {"results": [search_result_json(hit) for hit in hits]})


@observed_http
@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
