"""The API's requests, parsed from a decoded JSON body into typed commands.

Limits are those of the HTTP contract (shared/API.md). Unknown fields are ignored; a field of the
wrong type or out of range is an InvalidInput naming it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pai_core.errors import InvalidInput, PayloadTooLarge
from pai_core.models import ORIGINS, JsonObject, Origin

CATEGORY_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_CONTENT_CHARS = 100_000
MAX_METADATA_BYTES = 8 * 1024
MAX_QUERY_CHARS = 10_000
MAX_MESSAGE_CHARS = 32_000
MAX_ID_CHARS = 128
MAX_CURSOR_CHARS = 2048
DEFAULT_CATEGORY = "general"
MAX_STORE_MANY_ITEMS = 100


@dataclass(frozen=True)
class StoreMemory:
    content: str
    category: str
    metadata: JsonObject


@dataclass(frozen=True)
class StoreManyMemories:
    """Every item is valid: parsing refuses the whole request at its first invalid item."""

    items: tuple[StoreMemory, ...]


@dataclass(frozen=True)
class RetrieveMemory:
    id: str


@dataclass(frozen=True)
class ListMemories:
    category: str | None
    limit: int
    cursor: str | None
    origin: Origin | None = None


@dataclass(frozen=True)
class UpdateMemory:
    """At least one of content, category, metadata (None: left as it is; metadata is replaced whole)."""

    id: str
    content: str | None
    category: str | None
    metadata: JsonObject | None


@dataclass(frozen=True)
class MemoryHistory:
    id: str


@dataclass(frozen=True)
class DeleteMemory:
    id: str


MemoryCommand = (
    StoreMemory | StoreManyMemories | RetrieveMemory | ListMemories | UpdateMemory | MemoryHistory | DeleteMemory
)


SEARCH_SOURCES = ("memories", "documents")


@dataclass(frozen=True)
class SearchQuery:
    query: str
    top_k: int
    category: str | None
    min_score: float | None
    # What to search: "memories", "documents" or both (the default).
    sources: tuple[str, ...] = SEARCH_SOURCES


@dataclass(frozen=True)
class ChatRequest:
    message: str
    session_id: str | None
    use_memory: bool
    top_k: int
    stream: bool
    learn: bool = True


class _Fields:
    """Reads the fields of one JSON object; `path` is where that object sits in the request
    (`items[3]`), so that an error names the field as the client sent it (`items[3].content`)."""

    def __init__(self, body: JsonObject, *, path: str = "") -> None:
        self._body = body
        self._path = path

    def name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def invalid(self, key: str, problem: str) -> InvalidInput:
        name = self.name(key)
        return InvalidInput(f"'{name}' {problem}", field=name)

    def _get(self, key: str, required: bool) -> Any:
        value = self._body.get(key)
        if value is None and required:
            raise self.invalid(key, "is required")
        return value

    def text(
        self,
        name: str,
        *,
        required: bool = False,
        min_len: int = 1,
        max_len: int,
        pattern: re.Pattern[str] | None = None,
    ) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.invalid(name, "must be a string")
        if not min_len <= len(value) <= max_len:
            raise self.invalid(name, f"must have {min_len} to {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.invalid(name, f"must match {pattern.pattern}")
        return value

    def required_text(self, name: str, *, max_len: int, pattern: re.Pattern[str] | None = None) -> str:
        value = self.text(name, required=True, max_len=max_len, pattern=pattern)
        assert value is not None
        return value

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self._get(name, False)
        if value is None:
            return default
        # bool is an int subclass in Python, but `true` is not a number in JSON.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.invalid(name, "must be an integer")
        if not low <= value <= high:
            raise self.invalid(name, f"must be between {low} and {high}")
        return value

    def number(self, name: str, *, low: float, high: float) -> float | None:
        value = self._get(name, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(name, "must be a number")
        if not low <= value <= high:
            raise self.invalid(name, f"must be between {low} and {high}")
        return float(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.invalid(name, "must be true or false")
        return value

    def json_object(self, name: str, *, max_bytes: int) -> JsonObject | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.invalid(name, "must be a JSON object")
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > max_bytes:
            raise self.invalid(name, f"must be at most {max_bytes} bytes when serialized")
        return value

    def origin(self, name: str) -> Origin | None:
        value = self._get(name, False)
        if value is None:
            return None
        for origin in ORIGINS:  # narrows the JSON value to the Literal
            if value == origin:
                return origin
        raise self.invalid(name, f"must be one of {', '.join(ORIGINS)}")

    def objects(self, name: str, *, low: int, high: int) -> list[_Fields]:
        """A required array of `low`..`high` JSON objects, each read through its own _Fields."""
        value = self._get(name, True)
        if not isinstance(value, list):
            raise self.invalid(name, "must be an array")
        if not low <= len(value) <= high:
            raise self.invalid(name, f"must have {low} to {high} items")
        items = []
        for index, item in enumerate(value):
            path = f"{self.name(name)}[{index}]"
            if not isinstance(item, dict):
                raise InvalidInput(f"'{path}' must be a JSON object", field=path)
            items.append(_Fields(item, path=path))
        return items


def _store_fields(fields: _Fields) -> StoreMemory:
    return StoreMemory(
        content=fields.required_text("content", max_len=MAX_CONTENT_CHARS),
        category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN) or DEFAULT_CATEGORY,
        metadata=fields.json_object("metadata", max_bytes=MAX_METADATA_BYTES) or {},
    )


def _update_fields(fields: _Fields) -> UpdateMemory:
    update = UpdateMemory(
        id=fields.required_text("id", max_len=MAX_ID_CHARS),
        content=fields.text("content", max_len=MAX_CONTENT_CHARS),
        category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN),
        metadata=fields.json_object("metadata", max_bytes=MAX_METADATA_BYTES),
    )
    if update.content is None and update.category is None and update.metadata is None:
        # No one field is at fault, so the error names none.
        raise InvalidInput("'update' needs at least one of content, category, metadata")
    return update


def _store_many_fields(fields: _Fields) -> StoreManyMemories:
    # Every item is parsed before anything is returned: one invalid item refuses the whole request.
    items = fields.objects("items", low=1, high=MAX_STORE_MANY_ITEMS)
    return StoreManyMemories(items=tuple(_store_fields(item) for item in items))


def _list_fields(fields: _Fields) -> ListMemories:
    return ListMemories(
        category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN),
        limit=fields.integer("limit", default=20, low=1, high=100),
        cursor=fields.text("cursor", max_len=MAX_CURSOR_CHARS),
        origin=fields.origin("origin"),
    )


_MEMORY_PARSERS: dict[str, Callable[[_Fields], MemoryCommand]] = {
    "store": _store_fields,
    "store_many": _store_many_fields,
    "retrieve": lambda fields: RetrieveMemory(id=fields.required_text("id", max_len=MAX_ID_CHARS)),
    "list": _list_fields,
    "update": _update_fields,
    "history": lambda fields: MemoryHistory(id=fields.required_text("id", max_len=MAX_ID_CHARS)),
    "delete": lambda fields: DeleteMemory(id=fields.required_text("id", max_len=MAX_ID_CHARS)),
}
MEMORY_ACTIONS = tuple(_MEMORY_PARSERS)


def parse_memory_command(body: JsonObject) -> MemoryCommand:
    action = body.get("action")
    parser = _MEMORY_PARSERS.get(action) if isinstance(action, str) else None
    if parser is not None:
        return parser(_Fields(body))
    actions = ", ".join(MEMORY_ACTIONS)
    if action is None:
        raise InvalidInput(f"'action' is required: one of {actions}", field="action")
    raise InvalidInput(f"'action' must be one of {actions}", field="action", code="unknown_action")


def parse_search_query(body: JsonObject) -> SearchQuery:
    fields = _Fields(body)
    return SearchQuery(
        query=fields.required_text("query", max_len=MAX_QUERY_CHARS),
        top_k=fields.integer("topK", default=5, low=1, high=50),
        category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN),
        min_score=fields.number("minScore", low=-1.0, high=1.0),
        sources=_sources(body),
    )


def _sources(body: JsonObject) -> tuple[str, ...]:
    value = body.get("sources")
    if value is None:
        return SEARCH_SOURCES
    if (
        not isinstance(value, list)
        or not value
        or len(value) > len(SEARCH_SOURCES)
        or not all(isinstance(v, str) and v in SEARCH_SOURCES for v in value)
    ):
        raise InvalidInput('\'sources\' must be a non-empty array of "memories" and "documents"', field="sources")
    return tuple(dict.fromkeys(value))


def parse_chat_request(body: JsonObject) -> ChatRequest:
    fields = _Fields(body)
    return ChatRequest(
        message=fields.required_text("message", max_len=MAX_MESSAGE_CHARS),
        session_id=fields.text("sessionId", max_len=128, pattern=SESSION_ID_PATTERN),
        use_memory=fields.boolean("useMemory", default=True),
        top_k=fields.integer("topK", default=4, low=0, high=20),
        stream=fields.boolean("stream", default=False),
        learn=fields.boolean("learn", default=True),
    )


@dataclass(frozen=True)
class ExportAccount:
    cursor: str | None = None  # from the previous page of the export


@dataclass(frozen=True)
class ForgetAccount:
    pass


AccountCommand = ExportAccount | ForgetAccount
FORGET_CONFIRMATION = "forget everything"


def parse_account_command(body: JsonObject) -> AccountCommand:
    action = body.get("action")
    if action == "export":
        return ExportAccount(cursor=_Fields(body).text("cursor", max_len=MAX_CURSOR_CHARS))
    if action == "forget":
        # Irreversible by design (the keys are destroyed), so it takes more than a stray request.
        if body.get("confirm") != FORGET_CONFIRMATION:
            raise InvalidInput(f'forgetting an account needs "confirm": "{FORGET_CONFIRMATION}"', field="confirm")
        return ForgetAccount()
    if action is None:
        raise InvalidInput("'action' is required: export or forget", field="action")
    raise InvalidInput("'action' must be one of export, forget", field="action", code="unknown_action")


# -- POST /documents -----------------------------------------------------------------------------------

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DOCUMENT_NAME_CHARS = 255
# No path separators and no control characters (C0, DEL, C1) in a document's name.
_DOCUMENT_NAME = re.compile(r"[^/\\\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class UploadDocument:
    name: str
    content_type: str
    content: bytes
    category: str


@dataclass(frozen=True)
class ListDocuments:
    limit: int
    cursor: str | None


@dataclass(frozen=True)
class GetDocument:
    id: str


@dataclass(frozen=True)
class DeleteDocument:
    id: str


DocumentCommand = UploadDocument | ListDocuments | GetDocument | DeleteDocument


def _upload_fields(fields: _Fields) -> UploadDocument:
    name = fields.required_text("name", max_len=MAX_DOCUMENT_NAME_CHARS)
    if not _DOCUMENT_NAME.fullmatch(name):
        raise fields.invalid("name", "must not hold '/', '\\' or control characters")
    content_type = fields.required_text("contentType", max_len=255)
    encoded = fields.required_text("content", max_len=(MAX_DOCUMENT_BYTES + 2) // 3 * 4 + 16)
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise fields.invalid("content", "must be standard base64") from None
    if not content:
        raise fields.invalid("content", "must not be empty")
    return UploadDocument(
        name=name,
        content_type=content_type,
        content=content,
        category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN) or DEFAULT_CATEGORY,
    )


_DOCUMENT_PARSERS: dict[str, Callable[[_Fields], DocumentCommand]] = {
    "upload": _upload_fields,
    "list": lambda fields: ListDocuments(
        limit=fields.integer("limit", default=20, low=1, high=100),
        cursor=fields.text("cursor", max_len=MAX_CURSOR_CHARS),
    ),
    "get": lambda fields: GetDocument(id=fields.required_text("id", max_len=MAX_ID_CHARS)),
    "delete": lambda fields: DeleteDocument(id=fields.required_text("id", max_len=MAX_ID_CHARS)),
}
DOCUMENT_ACTIONS = tuple(_DOCUMENT_PARSERS)


def parse_document_command(body: JsonObject) -> DocumentCommand:
    """A file too large to be a document (over 4 MiB decoded) is a PayloadTooLarge, found before it is decoded."""
    action = body.get("action")
    parser = _DOCUMENT_PARSERS.get(action) if isinstance(action, str) else None
    if parser is not None:
        if action == "upload":
            encoded = body.get("content")
            if isinstance(encoded, str) and len(encoded) > (MAX_DOCUMENT_BYTES + 2) // 3 * 4 + 16:
                raise PayloadTooLarge(f"a document is at most {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
        return parser(_Fields(body))
    actions = ", ".join(DOCUMENT_ACTIONS)
    if action is None:
        raise InvalidInput(f"'action' is required: one of {actions}", field="action")
    raise InvalidInput(f"'action' must be one of {actions}", field="action", code="unknown_action")
