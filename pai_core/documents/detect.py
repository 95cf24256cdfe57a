"""Which parser a file goes to: decided from its bytes and the type it was declared as.

The declared type must be one PAI reads (else 415); the bytes must then be what it says. A PDF
starts with `%PDF-` (within its first KiB, as readers allow), a DOCX is a zip (`PK\\x03\\x04`), and
text, Markdown and HTML are UTF-8 (or UTF-16 with a byte-order mark) with no NUL byte. Bytes that
are something else are unreadable as the declared type (422), never parsed by a parser for another.
Among the text types the declared one picks the reading: all three are read as text, so a file
called HTML that is plain text loses nothing.
"""

from __future__ import annotations

from typing import Literal

from pai_core.errors import UnreadableDocument, UnsupportedMediaType

ContentType = Literal[
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
]
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CONTENT_TYPES: tuple[ContentType, ...] = (
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
)
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/html"})
_PDF_MAGIC = b"%PDF-"
_ZIP_MAGIC = b"PK\x03\x04"
_PDF_HEADER_WINDOW = 1024

Sniffed = Literal["pdf", "zip", "text", "binary"]


def sniff(content: bytes) -> Sniffed:
    if _PDF_MAGIC in content[:_PDF_HEADER_WINDOW]:
        return "pdf"
    if content.startswith(_ZIP_MAGIC):
        return "zip"
    try:
        decode_text(content)
    except UnicodeDecodeError:
        return "binary"
    return "text"


def decode_text(content: bytes) -> str:
    """UTF-8 (a BOM is dropped) or UTF-16 with its BOM; a NUL byte is not text."""
    text = content.decode("utf-16") if content.startswith((b"\xff\xfe", b"\xfe\xff")) else content.decode("utf-8-sig")
    if "\x00" in text:
        raise UnicodeDecodeError("utf-8", content, 0, 1, "a NUL byte is not text")
    return text


def decide_type(declared: str, content: bytes) -> ContentType:
    """The type PAI reads the file as; UnsupportedMediaType or UnreadableDocument when it cannot."""
    media = declared.split(";", 1)[0].strip().lower()
    chosen = next((t for t in CONTENT_TYPES if t == media), None)
    if chosen is None:
        raise UnsupportedMediaType(f"'{declared[:100]}' is not a type PAI reads: one of {', '.join(CONTENT_TYPES)}")
    found = sniff(content)
    if chosen == "application/pdf" and found != "pdf":
        raise UnreadableDocument("the content is not a PDF")
    if chosen == DOCX and found != "zip":
        raise UnreadableDocument("the content is not a DOCX (a DOCX is a zip archive)")
    if chosen in TEXT_TYPES and found != "text":
        what = {"pdf": "a PDF", "zip": "a zip archive"}.get(found, "binary data")
        raise UnreadableDocument(f"the content is {what}, not UTF-8 text")
    return chosen
