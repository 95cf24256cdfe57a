"""The records of the knowledge base: a document and its passages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
