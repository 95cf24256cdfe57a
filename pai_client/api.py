"""A client of PAI's HTTP API (openapi.yaml, ../shared/API.md): one method per operation, every
failure an `ApiError` carrying one line a person can read.

Nothing here knows the server's internals: it speaks HTTP and JSON only, so the client installs and
runs on a machine with no AWS credentials and no model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from pai_client import config

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_STREAM_URL = "http://127.0.0.1:8081"  # `make run`'s streamed chat (PAI_STREAM_PORT)
# Where `make run` saves the local user's key (pai_local/stack.py), relative to the repository.
LOCAL_KEY_PATH = Path(".pai") / "api-key"
# A chat reply from a small local model can take a while; everything else answers quickly.
TIMEOUT = httpx2.Timeout(30.0, read=120.0)
RETRIES = 3
MAX_RETRY_WAIT = 10.0

JsonObject = dict[str, Any]


class ApiError(Exception):
    """The API answered an error, or could not be reached (`status` None)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def line(self) -> str:
        """The one line shown to a person."""
        details = [part for part in (self.code, f"HTTP {self.status}" if self.status else None) if part]
        return f"{self.message} ({', '.join(details)})" if details else self.message


@dataclass(frozen=True)
class Settings:
    url: str
    api_key: str | None = field(repr=False)
    # Where streamed chats go (a deployment's ChatStreamUrl, the local Function URL): API Gateway's
    # HTTP API answers a streamed chat in one body. None: the API URL.
    stream_url: str | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None, profile_name: str | None = None
    ) -> Settings:
        """Where to send requests and with which key, from one source only, so that one stack's key
        never goes to another: a named profile (`--profile` or PAI_PROFILE); else PAI_API_URL and
        PAI_API_KEY when either is set; else the config file's default profile; else the local stack.
        Without a key, a loopback URL gets the key `make run` saved (found from the current
        directory upwards, then beside this package, where it sits in a checkout of the project)."""
        env = os.environ if environ is None else environ
        path = config.config_path(env)
        name = profile_name or env.get("PAI_PROFILE") or None
        if name:
            chosen = config.profile(config.load(path), name, path)
            return cls(url=chosen.url, api_key=chosen.api_key, stream_url=chosen.stream_url)
        if not (env.get("PAI_API_URL") or env.get("PAI_API_KEY")):
            data = config.load(path)
            if data.get("default"):
                chosen = config.profile(data, str(data["default"]), path)
                return cls(url=chosen.url, api_key=chosen.api_key, stream_url=chosen.stream_url)
        url = (env.get("PAI_API_URL") or DEFAULT_URL).rstrip("/")
        key = (env.get("PAI_API_KEY") or "").strip() or None
        if key is None and is_loopback(url):
            key = local_key(cwd or Path.cwd())
        stream_url = (env.get("PAI_STREAM_URL") or "").rstrip("/") or None
        if stream_url is None and not env.get("PAI_API_URL"):
            stream_url = DEFAULT_STREAM_URL  # `make run`'s Function URL; the API URL when it is not there
        return cls(url=url, api_key=key, stream_url=stream_url)


def is_loopback(url: str) -> bool:
    try:
        host = httpx2.URL(url).host
    except httpx2.InvalidURL:
        return False
    return host in ("127.0.0.1", "localhost", "::1")


# make run's key in the checkout `pai` was installed from, found wherever `pai` is run from.
CHECKOUT_KEY = Path(__file__).resolve().parent.parent / LOCAL_KEY_PATH


def local_key(start: Path) -> str | None:
    candidates = [directory / LOCAL_KEY_PATH for directory in (start, *start.parents)]
    candidates.append(CHECKOUT_KEY)
    for path in candidates:
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if text:
            return text
    return None


def error_from(response: httpx2.Response) -> ApiError:
    """The API's error body as one line; a body of another shape (a proxy's page, an API Gateway
    `{"message": ...}`) still gives the status and what it said."""
    status = response.status_code
    try:
        body = json.loads(response.read())
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or response.reason_phrase)
        if error.get("field"):
            message = f"{message} [field: {error['field']}]"
        return ApiError(message, status=status, code=str(error.get("code") or "error"))
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ApiError(body["message"], status=status, code=_default_code(status))
    return ApiError(response.reason_phrase or "unexpected answer", status=status, code=_default_code(status))


def _default_code(status: int) -> str:
    return {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}.get(status, "error")


class Api:
    """Synchronous client; `transport` lets tests answer requests without a socket."""

    def __init__(self, settings: Settings, transport: httpx2.BaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"Accept": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        # A proxy from the environment is for the outside world, never for a stack on this machine.
        self._http = httpx2.Client(
            base_url=settings.url,
            headers=headers,
            timeout=TIMEOUT,
            transport=transport,
            trust_env=not is_loopback(settings.url),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _require_key(self) -> None:
        if not self.settings.api_key:
            raise ApiError(
                "no API key: set PAI_API_KEY, run `pai configure`, or run `make run` in the project (it saves one in"
                " .pai/api-key)"
            )

    def post(self, path: str, body: JsonObject, *, idempotency_key: str | None = None) -> JsonObject:
        self._require_key()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        for attempt in range(RETRIES + 1):
            try:
                response = self._http.post(path, json=body, headers=headers)
            except httpx2.TimeoutException as exc:
                raise ApiError(f"the PAI API at {self.settings.url} did not answer in time") from exc
            except httpx2.HTTPError as exc:
                raise ApiError(f"cannot reach the PAI API at {self.settings.url}: {_reason(exc)}") from exc
            if response.status_code < 400:
                break
            error = error_from(response)
            # With a key, sending the request again can never store it twice: wait as told and retry.
            wait = _retry_after(response)
            retriable = error.status in (429, 503) or error.code == "request_in_progress"
            if not (idempotency_key and retriable and wait is not None and attempt < RETRIES):
                raise error
            time.sleep(wait)
        try:
            data = response.json()
        except ValueError as exc:
            raise ApiError(f"the API answered {path} with something that is not JSON") from exc
        if not isinstance(data, dict):
            raise ApiError(f"the API answered {path} with JSON that is not an object")
        return data

    # Memories
    def remember(self, content: str, category: str | None = None, *, idempotency_key: str | None = None) -> JsonObject:
        body: JsonObject = {"action": "store", "content": content}
        if category:
            body["category"] = category
        return self.post("/memory", body, idempotency_key=idempotency_key)

    def store_many(self, items: list[JsonObject], *, idempotency_key: str | None = None) -> JsonObject:
        return self.post("/memory", {"action": "store_many", "items": items}, idempotency_key=idempotency_key)

    def list_memories(
        self, category: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JsonObject:
        body: JsonObject = {"action": "list"}
        for name, value in (("category", category), ("limit", limit), ("cursor", cursor)):
            if value is not None:
                body[name] = value
        return self.post("/memory", body)

    def retrieve(self, memory_id: str) -> JsonObject:
        return self.post("/memory", {"action": "retrieve", "id": memory_id})

    def forget(self, memory_id: str) -> JsonObject:
        return self.post("/memory", {"action": "delete", "id": memory_id})

    # Search
    def search(
        self,
        query: str,
        top_k: int | None = None,
        category: str | None = None,
        sources: list[str] | None = None,
    ) -> JsonObject:
        body: JsonObject = {"query": query}
        if top_k is not None:
            body["topK"] = top_k
        if category:
            body["category"] = category
        if sources:
            body["sources"] = sources
        return self.post("/search", body)

    # Documents
    def upload(self, body: JsonObject, *, idempotency_key: str | None = None) -> JsonObject:
        return self.post("/documents", {"action": "upload", **body}, idempotency_key=idempotency_key)

    def list_documents(self, limit: int | None = None, cursor: str | None = None) -> JsonObject:
        body: JsonObject = {"action": "list"}
        if limit is not None:
            body["limit"] = limit
        if cursor is not None:
            body["cursor"] = cursor
        return self.post("/documents", body)

    def delete_document(self, document_id: str) -> JsonObject:
        return self.post("/documents", {"action": "delete", "id": document_id})

    # Account
    def export_page(self, cursor: str | None = None) -> JsonObject:
        body: JsonObject = {"action": "export"}
        if cursor is not None:
            body["cursor"] = cursor
        return self.post("/account", body)

    # Chat
    def chat(self, body: JsonObject) -> JsonObject:
        return self.post("/chat", {**body, "stream": False})

    def chat_stream(self, body: JsonObject) -> Iterator[tuple[str, JsonObject]]:
        """The reply's events as they come: ("delta", {"text"}) ..., then ("done", {...the JSON
        response's fields}). An `error` event mid-stream raises ApiError with the error's message.
        Closing the iterator (a Ctrl-C in the caller) closes the connection."""
        self._require_key()
        if self.settings.stream_url is not None:
            try:
                yield from self._chat_stream(body, f"{self.settings.stream_url}/chat")
                return
            except _Unreachable:
                pass  # no streamed-chat URL there (an older stack, `make run` on other ports): the API answers
        yield from self._chat_stream(body, "/chat")

    def _chat_stream(self, body: JsonObject, url: str) -> Iterator[tuple[str, JsonObject]]:
        started = False
        try:
            with self._http.stream(
                "POST", url, json={**body, "stream": True}, headers={"Accept": "text/event-stream"}
            ) as response:
                started = True
                if response.status_code >= 400:
                    raise error_from(response)
                content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if content_type != "text/event-stream":
                    # A server that answers the whole reply as JSON instead: one "done" event.
                    data = json.loads(response.read())
                    yield "done", data if isinstance(data, dict) else {}
                    return
                for event in httpx2.EventSource(response):
                    data = event.json() if event.data else {}
                    payload = data if isinstance(data, dict) else {}
                    if event.event == "error":
                        raise _error_event(payload)
                    yield event.event, payload
        except httpx2.TimeoutException as exc:
            raise ApiError(f"the PAI API at {self.settings.url} did not answer in time") from exc
        except httpx2.ConnectError as exc:
            if not started and url != "/chat":
                raise _Unreachable from exc
            raise ApiError(f"cannot reach the PAI API at {self.settings.url}: {_reason(exc)}") from exc
        except httpx2.HTTPError as exc:
            raise ApiError(f"cannot reach the PAI API at {self.settings.url}: {_reason(exc)}") from exc
        except ValueError as exc:
            raise ApiError("the API's event stream held something that is not JSON") from exc


class _Unreachable(Exception):
    """The streamed-chat URL refused the connection before anything was sent."""


def _error_event(payload: JsonObject) -> ApiError:
    error = payload.get("error")
    if isinstance(error, dict):
        return ApiError(str(error.get("message") or "the reply broke off"), code=str(error.get("code") or "error"))
    return ApiError("the reply broke off", code="stream_error")


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_WAIT)


def _reason(exc: httpx2.HTTPError) -> str:
    text = str(exc).strip()
    if isinstance(exc, httpx2.ConnectError):
        return "connection refused" if "refused" in text.lower() else (text or "cannot connect")
    return text or type(exc).__name__
