"""Turning files into requests: notes for `pai import`, uploads for `pai docs add`, and the
idempotency keys that make re-running either safe.

A key is derived from exactly what is sent, so the same file imported again sends the same requests
with the same keys and the API stores nothing twice (within its 24 h window), while a changed note
changes only its own batch's key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JsonObject = dict[str, Any]

BATCH_ITEMS = 100  # store_many's limit
# Under the API's 256 KiB body limit with room for the envelope and JSON escapes.
BATCH_BYTES = 200 * 1024

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class NotesError(ValueError):
    """A file that cannot be read as notes or as a document; the message names the file and line."""


def read_notes(path: Path, category: str | None = None) -> list[JsonObject]:
    """One item per JSON line (`.jsonl`/`.ndjson`, or any file whose first non-blank line is a JSON
    object), else one per paragraph (blank-line separated) of a text or Markdown file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NotesError(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise NotesError(f"{path}: {exc.strerror or exc}") from exc
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if path.suffix.lower() in (".jsonl", ".ndjson") or first.startswith("{"):
        items = list(_json_lines(path, text))
    else:
        items = [{"content": paragraph} for paragraph in _paragraphs(text)]
    if category:
        for item in items:
            item.setdefault("category", category)
    return items


def _json_lines(path: Path, text: str) -> Iterator[JsonObject]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise NotesError(f"{path}:{number}: not a JSON object ({exc})") from exc
        if not isinstance(value, dict) or not isinstance(value.get("content"), str):
            raise NotesError(f'{path}:{number}: each line must be an object with a "content" string')
        yield {name: value[name] for name in ("content", "category", "metadata") if name in value}


def _paragraphs(text: str) -> Iterator[str]:
    lines: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            lines.append(line.rstrip())
        elif lines:
            yield "\n".join(lines).strip()
            lines = []


def batches(items: list[JsonObject]) -> list[list[JsonObject]]:
    """Consecutive groups of at most BATCH_ITEMS items and about BATCH_BYTES of JSON each; the same
    items always give the same groups."""
    groups: list[list[JsonObject]] = []
    current: list[JsonObject] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, ensure_ascii=False).encode())
        if current and (len(current) == BATCH_ITEMS or size + item_size > BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        groups.append(current)
    return groups


def idempotency_key(kind: str, body: object) -> str:
    """`kind` plus the SHA-256 of the canonical JSON of what is sent (printable ASCII, 71 chars)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}-{hashlib.sha256(canonical.encode()).hexdigest()}"


def content_type(path: Path) -> str:
    try:
        return CONTENT_TYPES[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(CONTENT_TYPES))
        raise NotesError(f"{path}: unknown file type {path.suffix or '(none)'!r}; known: {known}") from None


def upload_body(path: Path, category: str | None = None) -> JsonObject:
    kind = content_type(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotesError(f"{path}: {exc.strerror or exc}") from exc
    body: JsonObject = {"name": path.name, "contentType": kind, "content": base64.b64encode(data).decode("ascii")}
    if category:
        body["category"] = category
    return body
