"""List cursors of the memory listings.

A cursor is the last key a page read, without the owner (the start key is rebuilt around the
caller's own, so no cursor can reach into another partition): `{"id"}` for the owner's listing,
`{"id", "ts"}` for a category's (its index sorts by timestamp), as unpadded URL-safe base64 of
compact JSON. Anything else is refused before DynamoDB is called: a key of the wrong type or shape
would be DynamoDB's ValidationException (or an emulator's 500), not the caller's 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from pai_core.errors import InvalidInput
from pai_core.ids import ID_HEX_CHARS

_CURSOR_ID = re.compile(f"[0-9a-f]{{{ID_HEX_CHARS}}}")
_MAX_CURSOR_TIMESTAMP = 2**48 - 1  # the milliseconds an id has room for (pai_core.ids)
NOT_OURS = "cursor is not one this API returned"


@dataclass(frozen=True)
class CursorPosition:
    id: str
    ts: int | None = None  # the item's `timestamp`: only in a category listing's cursor


def encode_cursor(position: CursorPosition) -> str:
    fields: dict[str, Any] = {"id": position.id}
    if position.ts is not None:
        fields["ts"] = position.ts
    raw = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, *, category_listing: bool) -> CursorPosition:
    """The position a cursor of ours holds; InvalidInput (field `cursor`) for anything else,
    including a real cursor of the other kind of listing."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        fields = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):  # not base64, not UTF-8, not JSON
        raise InvalidInput(NOT_OURS, field="cursor") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("id"), str) or not _CURSOR_ID.fullmatch(fields["id"]):
        raise InvalidInput(NOT_OURS, field="cursor")
    ts = fields.get("ts")
    if set(fields) not in ({"id"}, {"id", "ts"}) or (
        ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _MAX_CURSOR_TIMESTAMP)
    ):
        raise InvalidInput(NOT_OURS, field="cursor")
    position = CursorPosition(id=fields["id"], ts=ts)
    # Only the exact text encode_cursor makes: no padding, no whitespace, no duplicate keys.
    if encode_cursor(position) != cursor:
        raise InvalidInput(NOT_OURS, field="cursor")
    if category_listing != (ts is not None):
        raise InvalidInput("cursor does not belong to this listing", field="cursor")
    return position
