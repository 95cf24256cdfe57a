"""Documents: deciding a file's type, reading its text under bounds, and splitting it into passages.
Pure functions over bytes and text; no AWS, no model (the token counter is passed in)."""

from pai_core.documents.chunk import Passage, TokenSpans, split_passages
from pai_core.documents.detect import CONTENT_TYPES, ContentType, decide_type
from pai_core.documents.parse import Block, ParsedDocument, ParseLimits, parse_document
from pai_core.documents.worker import parse_bounded

__all__ = [
    "CONTENT_TYPES",
    "Block",
    "ContentType",
    "ParseLimits",
    "ParsedDocument",
    "Passage",
    "TokenSpans",
    "decide_type",
    "parse_bounded",
    "parse_document",
    "split_passages",
]
