"""How a document's metadata and its passages become DynamoDB items and back: pure functions of
(cipher, the table's context name, owner, record).

What the user wrote or uploaded is sealed under their branch key, bound to the record and attribute
it belongs to: a document's name; a passage's text, heading and embedding (an embedding can be
inverted back into much of its text). Ids, the content type, category, sizes, page numbers and
times stay readable: they are what listings and bounds need, and say nothing of the content.

Document, partition `{owner}#documents`, sort key the document id (time-ordered: newest first when
read backwards):
    encryptedName, contentType, category, bytes, pages (absent without pages), passages, createdAt,
    fingerprint (the keyed hash of the file's bytes, see pai_core.services.documents), status
    ("processing" or "failed"; absent when ready), failure (PAI's own reason, never the file's text)
Passage, partition `{owner}#passages`, sort key `{document id}#{number:05d}` (the passage id):
    documentId, category, page (absent without pages), encryptedContent, encryptedHeading (when it
    has one), encryptedEmbedding
"""

from __future__ import annotations

from typing import Any

from pai_core.adapters.dynamodb_pages import Item
from pai_core.crypto import EnvelopeCipher, RecordContext
from pai_core.documents.records import Document, DocumentStatus, StoredPassage
from pai_core.models import IndexedItem, ItemRef, iso_utc, parse_iso_utc

DOCUMENTS_SUFFIX = "#documents"
PASSAGES_SUFFIX = "#passages"
PASSAGE_DIGITS = 5
PASSAGE_INDEX_PROJECTION = "#owner, id, category, encryptedContent, encryptedEmbedding"


def passage_id(document_id: str, number: int) -> str:
    return f"{document_id}#{number:0{PASSAGE_DIGITS}d}"


def document_of_passage(passage: str) -> str:
    return passage.split("#", 1)[0]


def _context(table: str, owner: str, record_id: str, attribute: str) -> RecordContext:
    return RecordContext(partition={"table": table, "owner": owner}, record={"id": record_id, "attribute": attribute})


def document_item(cipher: EnvelopeCipher, table: str, owner: str, document: Document, *, fingerprint: str) -> Item:
    item: Item = {
        "owner": {"S": owner + DOCUMENTS_SUFFIX},
        "id": {"S": document.id},
        "encryptedName": {
            "B": cipher.encrypt(document.name.encode("utf-8"), _context(table, owner, document.id, "document-name"))
        },
        "contentType": {"S": document.content_type},
        "category": {"S": document.category},
        "bytes": {"N": str(document.bytes)},
        "passages": {"N": str(document.passages)},
        "createdAt": {"S": iso_utc(document.created_at)},
        "fingerprint": {"S": fingerprint},
    }
    if document.pages is not None:
        item["pages"] = {"N": str(document.pages)}
    if document.status != "ready":
        item["status"] = {"S": document.status}
    if document.failure is not None:
        item["failure"] = {"S": document.failure}
    return item


def status_from_item(item: dict[str, Any]) -> DocumentStatus:
    status = item.get("status", {}).get("S", "ready")
    return "processing" if status == "processing" else "failed" if status == "failed" else "ready"


def document_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> Document:
    document_id = item["id"]["S"]
    name = cipher.decrypt(item["encryptedName"]["B"], _context(table, owner, document_id, "document-name"))
    return Document(
        id=document_id,
        name=name.decode("utf-8"),
        content_type=item["contentType"]["S"],
        category=item["category"]["S"],
        bytes=int(item["bytes"]["N"]),
        pages=int(item["pages"]["N"]) if "pages" in item else None,
        passages=int(item["passages"]["N"]),
        created_at=parse_iso_utc(item["createdAt"]["S"]),
        status=status_from_item(item),
        failure=item["failure"]["S"] if "failure" in item else None,
    )


def passage_item(cipher: EnvelopeCipher, table: str, owner: str, passage: StoredPassage, *, vector: bytes) -> Item:
    def seal(value: bytes, attribute: str) -> bytes:
        return cipher.encrypt(value, _context(table, owner, passage.id, attribute))

    item: Item = {
        "owner": {"S": owner + PASSAGES_SUFFIX},
        "id": {"S": passage.id},
        "documentId": {"S": passage.document_id},
        "category": {"S": passage.category},
        "encryptedContent": {"B": seal(passage.text.encode("utf-8"), "passage-content")},
        "encryptedEmbedding": {"B": seal(vector, "passage-embedding")},
    }
    if passage.page is not None:
        item["page"] = {"N": str(passage.page)}
    if passage.heading is not None:
        item["encryptedHeading"] = {"B": seal(passage.heading.encode("utf-8"), "passage-heading")}
    return item


def passage_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> StoredPassage:
    pid = item["id"]["S"]

    def opened(attribute: str, name: str) -> str:
        return cipher.decrypt(item[name]["B"], _context(table, owner, pid, attribute)).decode("utf-8")

    return StoredPassage(
        id=pid,
        document_id=item["documentId"]["S"],
        text=opened("passage-content", "encryptedContent"),
        page=int(item["page"]["N"]) if "page" in item else None,
        heading=opened("passage-heading", "encryptedHeading") if "encryptedHeading" in item else None,
        category=item["category"]["S"],
    )


def indexed_passage_from_item(cipher: EnvelopeCipher, table: str, owner: str, item: dict[str, Any]) -> IndexedItem:
    """What a search index holds of a passage, from an item read with PASSAGE_INDEX_PROJECTION."""
    pid = item["id"]["S"]
    vector = cipher.decrypt(item["encryptedEmbedding"]["B"], _context(table, owner, pid, "passage-embedding"))
    text = cipher.decrypt(item["encryptedContent"]["B"], _context(table, owner, pid, "passage-content"))
    return IndexedItem(ref=ItemRef("passage", pid), category=item["category"]["S"], vector=vector, text=text.decode())
