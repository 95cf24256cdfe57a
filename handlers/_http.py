"""Everything HTTP, in one place: body parsing, the domain-error -> status table, response shaping."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

import handlers._logging  # noqa: F401  (pins the library loggers at WARNING, before any client exists)
from pai_core.deadline import request_deadline
from pai_core.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    PaiError,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
    UnreadableDocument,
    UnsupportedMediaType,
    UpstreamInvalidResponse,
    UpstreamUnavailable,
)
from pai_core.idempotency import IDEMPOTENCY_HEADER, Answer, RequestInProgress, parse_idempotency_key
from pai_core.models import JsonObject, Memory, MemoryVersion, SearchHit, iso_utc

if TYPE_CHECKING:
    from pai_core.documents.records import Document
    from pai_core.services.retrieval import Hit

MAX_BODY_BYTES = 256 * 1024
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side."
logger = Logger(service="pai")

_STATUS: dict[type[PaiError], HTTPStatus] = {
    InvalidInput: HTTPStatus.BAD_REQUEST,
    Unauthenticated: HTTPStatus.UNAUTHORIZED,
    RateLimited: HTTPStatus.TOO_MANY_REQUESTS,
    NotFound: HTTPStatus.NOT_FOUND,
    Conflict: HTTPStatus.CONFLICT,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    UnreadableDocument: HTTPStatus.UNPROCESSABLE_ENTITY,
    QuotaExceeded: HTTPStatus.TOO_MANY_REQUESTS,
    UpstreamUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    UpstreamInvalidResponse: HTTPStatus.BAD_GATEWAY,
}


def error_response(
    status: int, code: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> Response[str]:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": error}),
        headers=headers,
    )


def json_response(status: int, payload: JsonObject) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(payload, ensure_ascii=False, allow_nan=False),
    )


EVENT_STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def format_event(name: str, data: JsonObject) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, allow_nan=False)}\n\n"


def event_stream_response(events: Iterable[tuple[str, JsonObject]]) -> Response[str]:
    """A complete text/event-stream body, for runtimes that buffer the response."""
    body = "".join(format_event(name, data) for name, data in events)
    return Response(status_code=200, body=body, headers=EVENT_STREAM_HEADERS)


def status_of(exc: PaiError) -> HTTPStatus | None:
    """The status a domain error maps to; None for our own failures (they are 500s)."""
    return next((status for kind, status in _STATUS.items() if isinstance(exc, kind)), None)


def error_json(exc: Exception) -> JsonObject:
    """The error body an exception gets, for when no status can be sent any more (mid-stream)."""
    if isinstance(exc, PaiError) and status_of(exc) is not None:
        return {"error": {"code": exc.code, "message": exc.message}}
    return {"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}}


def create_app() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()
    app.use(middlewares=[within_function_timeout])

    @app.exception_handler(PaiError)
    def domain_error(exc: PaiError) -> Response[str]:
        status = status_of(exc)
        if status is None:  # IntegrityError and anything unmapped is our problem, not the caller's
            return _internal_error(exc)
        headers = None
        if isinstance(exc, UpstreamUnavailable):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
            logger.warning("dependency unavailable", extra={"code": exc.code, "reason": exc.message})
        elif isinstance(exc, RateLimited | RequestInProgress):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        elif isinstance(exc, Unauthenticated):
            headers = {"WWW-Authenticate": 'Bearer realm="pai"'}
        return error_response(status, exc.code, exc.message, field=getattr(exc, "field", None), headers=headers)

    @app.exception_handler(NotFoundError)
    def unknown_route(exc: NotFoundError) -> Response[str]:
        return error_response(404, "route_not_found", "no such route")

    app.exception_handler(Exception)(_internal_error)
    return app


# What a request keeps back from its function's timeout to shape and send its answer.
RESPONSE_MARGIN_SECONDS = 1.0


def within_function_timeout(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Runs the route under a deadline: the time the function has left, less the margin to answer
    in. Calls to AWS that could not finish before it fail at once with a 503 (pai_core.deadline)."""
    remaining_millis = getattr(app.lambda_context, "get_remaining_time_in_millis", None)
    if remaining_millis is None:
        return next_middleware(app)
    with request_deadline(remaining_millis() / 1000 - RESPONSE_MARGIN_SECONDS):
        return next_middleware(app)


def _internal_error(exc: Exception) -> Response[str]:
    # The traceback goes to the log (no request data is in it); the caller gets a fixed body.
    if isinstance(exc, IntegrityError):
        logger.error("stored data failed authentication", exc_info=exc)
    else:
        logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", INTERNAL_ERROR_MESSAGE)


def request_owner(app: APIGatewayHttpResolver) -> str:
    """The user a request acts for. Every route but /health calls this before anything else:
    authentication first (nothing is read or written for an unauthenticated caller), then the
    caller's own limits."""
    from pai_core.bootstrap import get_container

    owner = authenticated_owner(app)
    get_container().limits.admit_request(owner)
    return owner


def authenticated_owner(app: APIGatewayHttpResolver) -> str:
    """The user whose API key the request carries, as the API key authorizer (handlers/authorizer.py)
    left it in `requestContext.authorizer.lambda`. The authorizer never denies (API Gateway could
    only answer a denial with its own 403 body), so this is where a bad key becomes our 401. Fails
    closed: no authorizer context at all (no Authorization header on the local gateway, or a route
    without the authorizer) is a 401 too. Reads nothing but the event."""
    from pai_core.auth import AuthFailure, auth_failure_error, is_user_id

    context = app.current_event.request_context.authorizer.get_lambda
    if not context:
        if app.current_event.headers.get("authorization"):
            logger.warning("a request with an Authorization header reached the function without an authorizer")
        raise auth_failure_error(AuthFailure.MISSING)
    failure = context.get("authError")
    if failure is not None:
        raise auth_failure_error(str(failure))
    user_id = context.get("userId")
    if not is_user_id(user_id):
        logger.error("the authorizer passed an unusable user id")
        raise auth_failure_error(AuthFailure.INVALID)
    return str(user_id)


def json_body(app: APIGatewayHttpResolver, *, max_bytes: int = MAX_BODY_BYTES) -> JsonObject:
    """The request's JSON object; bodies over `max_bytes` (256 KiB unless the route says more) are a 413."""
    event = app.current_event
    try:
        raw = (
            base64.b64decode(event.body or "", validate=True)
            if event.is_base64_encoded
            else (event.body or "").encode()
        )
    except ValueError:  # binascii.Error, non-ASCII base64, unencodable text
        raise InvalidInput("request body must be a JSON object", code="invalid_json") from None
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes // 1024} KiB")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, NaN/Infinity, absurd nesting
        raise InvalidInput("request body must be a JSON object", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", code="invalid_json")
    field = first_non_text(body)
    if field is not None:
        raise InvalidInput(f"'{field}' holds an unpaired surrogate: it is not Unicode text", field=field)
    return body


def idempotent(
    app: APIGatewayHttpResolver,
    owner: str,
    *,
    body: JsonObject,
    run: Callable[[], Response[str]],
    stores: bool = True,
) -> Response[str]:
    """`run()`'s response, or, for a storing request repeated with the same Idempotency-Key by the
    same user, the first one's (pai_core.idempotency). Routes that take the header call this after
    parsing the body, so a request that is not valid is refused before any record is made. A
    malformed header is refused whatever the request; `stores=False` (an action that stores
    nothing) and a request without the header just `run()`."""
    # Event headers are case-insensitive here.
    key = parse_idempotency_key(app.current_event.headers.get(IDEMPOTENCY_HEADER))
    if key is None or not stores:
        return run()
    from pai_core.bootstrap import get_container

    answer = get_container().idempotency.run(
        owner,
        scope=app.current_event.route_key,
        key=key,
        body=body,
        work=lambda: _answer_of(run()),
        lambda_context=app.lambda_context,
    )
    return Response(status_code=answer.status, body=answer.body, headers=dict(answer.headers))


def _answer_of(response: Response[str]) -> Answer:
    # The content type and the stream's Cache-Control: single-valued, nothing of the user's.
    headers = {name: value for name, value in response.headers.items() if isinstance(value, str)}
    return Answer(status=response.status_code, body=str(response.body or ""), headers=headers)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# JSON lets a string escape half of a UTF-16 pair (`"\\ud800"`) on its own; json.loads joins real
# pairs into one character, so any surrogate left after decoding is an unpaired one.
_SURROGATE = re.compile("[\ud800-\udfff]")


def first_non_text(body: JsonObject) -> str | None:
    """The path (`content`, `metadata.tags[2]`) of the first string or object key in a decoded body
    that holds an unpaired surrogate; None when every string is text.

    Checked once for the whole body, before any route reads a field: such a string cannot be
    encoded as UTF-8, so the tokenizer, the metadata size check or the storage would fail on it
    deep inside a request. A key that is not text is named with its surrogate escaped."""
    pending: list[tuple[str, object]] = [("", body)]
    while pending:  # a loop, not recursion: json.loads accepts deeper nesting than the stack has room for
        path, value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            children: list[tuple[str, object]] = []
            for key, inner in value.items():
                name = _key_name(key) if not path else f"{path}.{_key_name(key)}"
                if _SURROGATE.search(key):
                    return name
                children.append((name, inner))
            pending.extend(reversed(children))
        elif isinstance(value, list):
            pending.extend(reversed([(f"{path}[{index}]", inner) for index, inner in enumerate(value)]))
    return None


def _key_name(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def memory_json(memory: Memory) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "id": memory.id,
        "content": memory.content,
        "category": memory.category,
        "metadata": memory.metadata,
        "createdAt": iso_utc(memory.created_at),
        "updatedAt": iso_utc(memory.last_changed),
        "origin": memory.origin,
    }
    if memory.origin == "learned" and memory.source_session is not None:
        shaped["source"] = {"sessionId": memory.source_session}
    return shaped


def version_json(version: MemoryVersion) -> dict[str, Any]:
    return {
        "content": version.content,
        "category": version.category,
        "metadata": version.metadata,
        "validFrom": iso_utc(version.valid_from),
        "validTo": None if version.valid_to is None else iso_utc(version.valid_to),
        "reason": version.reason,
    }


def document_json(document: Document) -> dict[str, Any]:
    return {
        "id": document.id,
        "name": document.name,
        "contentType": document.content_type,
        "category": document.category,
        "bytes": document.bytes,
        "pages": document.pages,
        "passages": document.passages,
        "createdAt": iso_utc(document.created_at),
        "status": document.status,
        **({"failure": document.failure} if document.failure is not None else {}),
    }


def search_result_json(hit: Hit) -> dict[str, Any]:
    """One /search result: a memory, or a passage of a document (`kind` says which)."""
    if isinstance(hit, SearchHit):
        return {"kind": "memory", **memory_json(hit.memory), "score": hit.score}
    return {
        "kind": "document",
        "id": hit.passage.id,
        "content": hit.passage.text,
        "category": hit.passage.category,
        "createdAt": iso_utc(hit.document.created_at),
        "score": hit.score,
        "documentId": hit.document.id,
        "name": hit.document.name,
        "page": hit.passage.page,
        "heading": hit.passage.heading,
    }
