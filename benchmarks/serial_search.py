"""The search route as it was before its rate-limit count overlapped the search: the count is
written and waited for first, then the query is read, embedded and ranked and the hits fetched.

The baseline of the warm-search table in `make bench` (benchmarks/bench.py times it in the same run,
alternating with handlers.search on the same container); nothing ships or routes to it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers._http import create_app, json_body, json_response, memory_json, request_owner
from pai_core.bootstrap import get_container
from pai_core.requests import parse_search_query

app = create_app()


@app.post("/search")
def search() -> Response[str]:
    owner = request_owner(app)
    query = parse_search_query(json_body(app))
    hits = get_container().memories.search(
        owner, query.query, top=query.top_k, category=query.category, min_score=query.min_score
    )
    return json_response(200, {"results": [{**memory_json(hit.memory), "score": hit.score} for hit in hits]})


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
