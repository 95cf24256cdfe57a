"""How a memory, and each earlier version of it, becomes a DynamoDB item and back: pure functions of
(cipher, the table's context name, owner, record).

Every user-supplied value (content, metadata, the reason of an update, and the embedding, which can
be inverted back into much of its text) is sealed under its user's branch key, bound to the record and
attribute it belongs to; an earlier version's values are bound to its version number too, so no
sealed value can be moved to another memory, version or attribute. Category names, ids, times, the
origin and a chat session id stay readable: they are what the table is queried by, or ids.

Current memory, partition `{owner}`, sort key the memory id:
    category, ownerCategory + timestamp (the category GSI's keys), createdAt, updatedAt (after the
    first update), origin, sourceSession (learned memories), version (1, 2, ...), encryptedContent,
    encryptedMetadata, encryptedEmbedding, encryptedReason (after the first update)
Earlier version, partition `{owner}#history`, sort key `{memory id}#{version:06d}`:
    memoryId, version, category, validFrom, encryptedContent, encryptedMetadata, encryptedReason
    (when that version replaced another). Its validTo is the next version's validFrom, read from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pai_core.adapters.dynamodb_pages import Item, epoch_millis, owner_category
from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.models import (
    ORIGINS,
    IndexedItem,
    ItemRef,
    JsonObject,
    Memory,
    Origin,
    iso_utc,
    parse_iso_utc,
)

HISTORY_SUFFIX = "#history"
_VERSION_DIGITS = 6


@dataclass(frozen=True)
class PastVersion:
    """An earlier version as stored: its number, what it said, since when, and why it replaced the one before."""

    memory_id: str
    version: int
    content: str
    category: str
    metadata: JsonObject
    valid_from: datetime
    reason: str | None


def _context(table: str, owner: str, memory_id: str, attribute: str) -> RecordContext:
    return RecordContext(partition={"table": table, "owner": owner}, record={"id": memory_id, "attribute": attribute})


def _version_context(table: str, owner: str, memory_id: str, version: int, attribute: str) -> RecordContext:
    return RecordContext(
        partition={"table": table, "owner": owner},
        record={"id": memory_id, "version": str(version), "attribute": attribute},
    )


def _json(value: JsonObject) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal_embedding(cipher: EnvelopeCipher, table: str, owner: str, memory_id: str, vector: bytes) -> bytes:
    return cipher.encrypt(vector, _context(table, owner, memory_id, "embedding"))


def memory_item(
    cipher: EnvelopeCipher,
    table: str,
    owner: str,
    memory: Memory,
    *,
    sealed_embedding: bytes,
    version: int = 1,
    reason: str | None = None,
) -> Item:
    item: Item = {
        "owner": {"S": owner},
        "id": {"S": memory.id},
        "category": {"S": memory.category},
        "ownerCategory": {"S": owner_category(owner, memory.category)},
        "timestamp": {"N": str(epoch_millis(memory.created_at))},
        "createdAt": {"S": iso_utc(memory.created_at)},
        "origin": {"S": memory.origin},
        "version": {"N": str(version)},
        "encryptedContent": {
            "B": cipher.encrypt(memory.content.encode("utf-8"), _context(table, owner, memory.id, "content"))
        },
        "encryptedMetadata": {
            "B": cipher.encrypt(_json(memory.metadata), _context(table, owner, memory.id, "metadata"))
        },
        "encryptedEmbedding": {"B": sealed_embedding},
    }
    if memory.updated_at is not None:
        item["updatedAt"] = {"S": iso_utc(memory.updated_at)}
    if memory.source_session is not None:
        item["sourceSession"] = {"S": memory.source_session}
    if reason is not None:
        item["encryptedReason"] = {
            "B": cipher.encrypt(reason.encode("utf-8"), _context(table, owner, memory.id, "reason"))
        }
    return item


def memory_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> Memory:
    memory_id = item["id"]["S"]
    content = cipher.decrypt(item["encryptedContent"]["B"], _context(table, owner, memory_id, "content"))
    metadata = cipher.decrypt(item["encryptedMetadata"]["B"], _context(table, owner, memory_id, "metadata"))
    origin = item.get("origin", {}).get("S", "api")  # memories stored before origins were recorded
    return Memory(
        id=memory_id,
        content=content.decode("utf-8"),
        category=item["category"]["S"],
        metadata=json.loads(metadata),
        created_at=parse_iso_utc(item["createdAt"]["S"]),
        updated_at=parse_iso_utc(item["updatedAt"]["S"]) if "updatedAt" in item else None,
        origin=cast(Origin, origin) if origin in ORIGINS else "api",
        source_session=item["sourceSession"]["S"] if "sourceSession" in item else None,
    )


def version_of(item: dict[str, Any]) -> int:
    """The current item's version number (memories stored before versions were recorded: 1)."""
    return int(item["version"]["N"]) if "version" in item else 1


def reason_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> str | None:
    if "encryptedReason" not in item:
        return None
    memory_id = item["id"]["S"]
    return cipher.decrypt(item["encryptedReason"]["B"], _context(table, owner, memory_id, "reason")).decode("utf-8")


def indexed_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> IndexedItem:
    """What a search index holds of a memory, from an item read with INDEX_PROJECTION."""
    memory_id = item["id"]["S"]
    vector = cipher.decrypt(item["encryptedEmbedding"]["B"], _context(table, owner, memory_id, "embedding"))
    text = cipher.decrypt(item["encryptedContent"]["B"], _context(table, owner, memory_id, "content"))
    return IndexedItem(
        ref=ItemRef("memory", memory_id), category=item["category"]["S"], vector=vector, text=text.decode("utf-8")
    )


# With the keys: whoever meters reads by item (benchmarks.capacity) finds each item by them. `#owner`: a reserved word.
INDEX_PROJECTION = "#owner, id, category, encryptedContent, encryptedEmbedding"


def history_key(owner: str, memory_id: str, version: int) -> Item:
    return {"owner": {"S": owner + HISTORY_SUFFIX}, "id": {"S": f"{memory_id}#{version:0{_VERSION_DIGITS}d}"}}


def history_prefix(memory_id: str) -> str:
    return f"{memory_id}#"


def history_item(cipher: EnvelopeCipher, table: str, owner: str, past: PastVersion) -> Item:
    def seal(value: bytes, attribute: str) -> bytes:
        return cipher.encrypt(value, _version_context(table, owner, past.memory_id, past.version, attribute))

    item: Item = {
        **history_key(owner, past.memory_id, past.version),
        "memoryId": {"S": past.memory_id},
        "version": {"N": str(past.version)},
        "category": {"S": past.category},
        "validFrom": {"S": iso_utc(past.valid_from)},
        "encryptedContent": {"B": seal(past.content.encode("utf-8"), "content")},
        "encryptedMetadata": {"B": seal(_json(past.metadata), "metadata")},
    }
    if past.reason is not None:
        item["encryptedReason"] = {"B": seal(past.reason.encode("utf-8"), "reason")}
    return item


def past_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> PastVersion:
    memory_id, version = item["memoryId"]["S"], int(item["version"]["N"])

    def opened(attribute: str) -> str:
        context = _version_context(table, owner, memory_id, version, attribute)
        return cipher.decrypt(item[f"encrypted{attribute.capitalize()}"]["B"], context).decode("utf-8")

    return PastVersion(
        memory_id=memory_id,
        version=version,
        content=opened("content"),
        category=item["category"]["S"],
        metadata=json.loads(opened("metadata")),
        valid_from=parse_iso_utc(item["validFrom"]["S"]),
        reason=opened("reason") if "encryptedReason" in item else None,
    )
