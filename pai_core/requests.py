"""The API's requests, parsed from a decoded JSON body into typed commands.

Limits are those of the HTTP contract (shared/API.md). Unknown fields are ignored; a field of the
wrong type or out of range is an InvalidInput naming it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pai_core.errors import InvalidInput
from pai_core.models import JsonObject

CATEGORY_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_CONTENT_CHARS = 100_000
MAX_METADATA_BYTES = 8 * 1024
MAX_QUERY_CHARS = 10_000
MAX_MESSAGE_CHARS = 32_000
MAX_ID_CHARS = 128
MAX_CURSOR_CHARS = 2048
DEFAULT_CATEGORY = "general"


@dataclass(frozen=True)
class StoreMemory:
    content: str
    category: str
    metadata: JsonObject


@dataclass(frozen=True)
class RetrieveMemory:
    id: str


@dataclass(frozen=True)
class ListMemories:
    category: str | None
    limit: int
    cursor: str | None


@dataclass(frozen=True)
class DeleteMemory:
    id: str


MemoryCommand = StoreMemory | RetrieveMemory | ListMemories | DeleteMemory


@dataclass(frozen=True)
class SearchQuery:
    query: str
    top_k: int
    category: str | None
    min_score: float | None


@dataclass(frozen=True)
class ChatRequest:
    message: str
    session_id: str | None
    use_memory: bool
    top_k: int
    stream: bool


class _Fields:
    def __init__(self, body: JsonObject) -> None:
        self._body = body

    def _get(self, name: str, required: bool) -> Any:
        value = self._body.get(name)
        if value is None and required:
            raise InvalidInput(f"'{name}' is required", field=name)
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
            raise InvalidInput(f"'{name}' must be a string", field=name)
        if not min_len <= len(value) <= max_len:
            raise InvalidInput(f"'{name}' must have {min_len} to {max_len} characters", field=name)
        if pattern is not None and not pattern.fullmatch(value):
            raise InvalidInput(f"'{name}' must match {pattern.pattern}", field=name)
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
            raise InvalidInput(f"'{name}' must be an integer", field=name)
        if not low <= value <= high:
            raise InvalidInput(f"'{name}' must be between {low} and {high}", field=name)
        return value

    def number(self, name: str, *, low: float, high: float) -> float | None:
        value = self._get(name, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"'{name}' must be a number", field=name)
        if not low <= value <= high:
            raise InvalidInput(f"'{name}' must be between {low} and {high}", field=name)
        return float(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidInput(f"'{name}' must be true or false", field=name)
        return value

    def json_object(self, name: str, *, max_bytes: int) -> JsonObject:
        value = self._get(name, False)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidInput(f"'{name}' must be a JSON object", field=name)
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > max_bytes:
            raise InvalidInput(f"'{name}' must be at most {max_bytes} bytes when serialized", field=name)
        return value


def parse_memory_command(body: JsonObject) -> MemoryCommand:
    fields = _Fields(body)
    action = body.get("action")
    if action == "store":
        return StoreMemory(
            content=fields.required_text("content", max_len=MAX_CONTENT_CHARS),
            category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN) or DEFAULT_CATEGORY,
            metadata=fields.json_object("metadata", max_bytes=MAX_METADATA_BYTES),
        )
    if action == "retrieve":
        return RetrieveMemory(id=fields.required_text("id", max_len=MAX_ID_CHARS))
    if action == "list":
        return ListMemories(
            category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN),
            limit=fields.integer("limit", default=20, low=1, high=100),
            cursor=fields.text("cursor", max_len=MAX_CURSOR_CHARS),
        )
    if action == "delete":
        return DeleteMemory(id=fields.required_text("id", max_len=MAX_ID_CHARS))
    if action is None:
        raise InvalidInput("'action' is required: store, retrieve, list or delete", field="action")
    raise InvalidInput("'action' must be one of store, retrieve, list, delete", field="action", code="unknown_action")


def parse_search_query(body: JsonObject) -> SearchQuery:
    fields = _Fields(body)
    return SearchQuery(
        query=fields.required_text("query", max_len=MAX_QUERY_CHARS),
        top_k=fields.integer("topK", default=5, low=1, high=50),
        category=fields.text("category", max_len=64, pattern=CATEGORY_PATTERN),
        min_score=fields.number("minScore", low=-1.0, high=1.0),
    )


def parse_chat_request(body: JsonObject) -> ChatRequest:
    fields = _Fields(body)
    return ChatRequest(
        message=fields.required_text("message", max_len=MAX_MESSAGE_CHARS),
        session_id=fields.text("sessionId", max_len=128, pattern=SESSION_ID_PATTERN),
        use_memory=fields.boolean("useMemory", default=True),
        top_k=fields.integer("topK", default=4, low=0, high=20),
        stream=fields.boolean("stream", default=False),
    )


@dataclass(frozen=True)
class ExportAccount:
    pass


@dataclass(frozen=True)
class ForgetAccount:
    pass


AccountCommand = ExportAccount | ForgetAccount
FORGET_CONFIRMATION = "forget everything"


def parse_account_command(body: JsonObject) -> AccountCommand:
    action = body.get("action")
    if action == "export":
        return ExportAccount()
    if action == "forget":
        # Irreversible by design (the keys are destroyed), so it takes more than a stray request.
        if body.get("confirm") != FORGET_CONFIRMATION:
            raise InvalidInput(f'forgetting an account needs "confirm": "{FORGET_CONFIRMATION}"', field="confirm")
        return ForgetAccount()
    if action is None:
        raise InvalidInput("'action' is required: export or forget", field="action")
    raise InvalidInput("'action' must be one of export, forget", field="action", code="unknown_action")
