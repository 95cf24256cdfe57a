"""The records of the knowledge base: a document and its passages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# "processing": accepted, read by the ingest function off the request path (its passages are not yet
# searchable); "failed": that reading failed (`failure` says why) and nothing of its passages is kept.
DocumentStatus = Literal["ready", "processing", "failed"]


@dataclass(frozen=True)
class Document:
    id: str
    name: str
    content_type: str
    category: str
    bytes: int
    pages: int | None  # None for formats without pages (text, Markdown, HTML, DOCX)
    passages: int
    created_at: datetime
    status: DocumentStatus = "ready"
    failure: str | None = None


@dataclass(frozen=True)
class StoredPassage:
    """One passage of a document, as search and chat cite it."""

    id: str
    document_id: str
    text: str
    page: int | None
    heading: str | None
    category: str


@dataclass(frozen=True)
class DocumentPage:
    items: list[Document]
    cursor: str | None


@dataclass(frozen=True)
class DocumentTotals:
    """What a user holds in the knowledge base, for their bounds."""

    documents: int
    bytes: int
    passages: int
