"""Reading a file's text as blocks (a paragraph, or a heading), each with its page and the heading
above it. Run inside the bounded worker (pai_core.documents.worker), never in a request's own process:
a parser fed a hostile file may take time or memory that only a process of its own can bound.

Each parser is a maintained library: pypdf (pages; its own bound on what one stream may inflate to),
python-docx (over a zip whose declared sizes are checked first: a zip bomb is refused before a byte
of it is inflated), BeautifulSoup with the standard library's HTML parser (scripts, styles and other
non-text elements dropped). Markdown headings (ATX `#` and setext underlines) are read by line.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pai_core.documents.detect import DOCX, ContentType, decode_text
from pai_core.errors import UnreadableDocument


@dataclass(frozen=True)
class ParseLimits:
    max_pages: int = 2_000
    max_text_chars: int = 5_000_000
    # A DOCX: what its members may declare they inflate to, in all and as a ratio to their size.
    max_unzipped_bytes: int = 64 * 1024 * 1024
    max_zip_ratio: int = 200
    max_zip_members: int = 2_000


@dataclass(frozen=True)
class Block:
    text: str
    page: int | None
    heading: str | None
    is_heading: bool = False


@dataclass(frozen=True)
class ParsedDocument:
    blocks: list[Block]
    pages: int | None

    @property
    def text(self) -> str:
        """The extracted text, blocks separated by blank lines (what an export returns)."""
        return "\n\n".join(block.text for block in self.blocks)


def parse_document(content: bytes, content_type: ContentType, limits: ParseLimits | None = None) -> ParsedDocument:
    limits = limits or ParseLimits()
    if content_type == "application/pdf":
        parsed = _pdf(content, limits)
    elif content_type == DOCX:
        parsed = _docx(content, limits)
    else:
        try:
            text = decode_text(content)
        except UnicodeDecodeError as exc:
            raise UnreadableDocument("the content is not UTF-8 text") from exc
        if content_type == "text/html":
            parsed = ParsedDocument(list(_with_headings(_html_blocks(text))), None)
        elif content_type == "text/markdown":
            parsed = ParsedDocument(list(_with_headings(_markdown_blocks(text))), None)
        else:
            parsed = ParsedDocument([Block(p, None, None) for p in _paragraphs(text)], None)
    if not parsed.blocks:
        raise UnreadableDocument("the document has no extractable text")
    if sum(len(block.text) for block in parsed.blocks) > limits.max_text_chars:
        raise UnreadableDocument(f"the document holds more than {limits.max_text_chars} characters of text")
    return parsed


_BLANK_LINES = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _paragraphs(text: str) -> Iterator[str]:
    for part in _BLANK_LINES.split(text.replace("\r\n", "\n")):
        cleaned = "\n".join(_SPACES.sub(" ", line).strip() for line in part.split("\n")).strip()
        if cleaned:
            yield cleaned


def _with_headings(blocks: Iterable[tuple[str, bool]], page: int | None = None) -> Iterator[Block]:
    heading: str | None = None
    for text, is_heading in blocks:
        if is_heading:
            heading = text[:300]
        yield Block(text, page, heading, is_heading)


# -- PDF ---------------------------------------------------------------------------------------------


# A complete PDF ends with `%%EOF` (writers may append a little after it): without one the file was
# cut short, and a lenient reader would quietly index what happened to arrive.
_PDF_END = b"%%EOF"
_PDF_TAIL_BYTES = 2048


def _pdf(content: bytes, limits: ParseLimits) -> ParsedDocument:
    from pypdf import PdfReader

    if _PDF_END not in content[-_PDF_TAIL_BYTES:]:
        raise UnreadableDocument("the PDF is truncated (it has no end-of-file marker)")

    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))  # encrypted with an empty user password: readable by anyone
            except Exception:
                opened = False
            if not opened:
                raise UnreadableDocument("the PDF is password-protected")
        # The page tree's own count first: walking 100,000 pages to count them is the cost to avoid.
        declared = _declared_pages(reader)
        if declared > limits.max_pages:
            raise UnreadableDocument(f"the PDF has {declared} pages; at most {limits.max_pages} are read")
        pages = reader.pages
        if len(pages) > limits.max_pages:
            raise UnreadableDocument(f"the PDF has more than {limits.max_pages} pages")
        blocks: list[Block] = []
        chars = 0
        for number, page in enumerate(pages, start=1):
            text = page.extract_text() or ""
            chars += len(text)
            if chars > limits.max_text_chars:
                raise UnreadableDocument(f"the document holds more than {limits.max_text_chars} characters of text")
            blocks.extend(Block(p, number, None) for p in _paragraphs(text))
        count = len(pages)
    except UnreadableDocument:
        raise
    except Exception as exc:
        raise UnreadableDocument("the PDF is corrupt or truncated") from exc
    if not blocks:
        raise UnreadableDocument("the PDF has no extractable text (scanned images need OCR, which PAI does not do)")
    return ParsedDocument(blocks, count)


def _declared_pages(reader: Any) -> int:
    try:
        count = reader.trailer["/Root"]["/Pages"].get("/Count", 0)
        return int(count)
    except (KeyError, TypeError, ValueError, AttributeError):
        return 0


# -- DOCX --------------------------------------------------------------------------------------------


def _check_zip(content: bytes, limits: ParseLimits) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableDocument("the DOCX is not a readable zip archive") from exc
    if len(members) > limits.max_zip_members:
        raise UnreadableDocument("the DOCX holds too many parts")
    total = sum(member.file_size for member in members)
    if total > limits.max_unzipped_bytes:
        raise UnreadableDocument("the DOCX expands past the size PAI reads (a zip bomb?)")
    for member in members:
        if member.file_size > 1024 * 1024 and member.file_size > limits.max_zip_ratio * max(member.compress_size, 1):
            raise UnreadableDocument("the DOCX expands past the size PAI reads (a zip bomb?)")
    if "word/document.xml" not in {member.filename for member in members}:
        raise UnreadableDocument("the zip archive is not a DOCX (it has no word/document.xml)")


def _docx(content: bytes, limits: ParseLimits) -> ParsedDocument:
    _check_zip(content, limits)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(content))
        pieces: list[tuple[str, bool]] = []
        for part in document.iter_inner_content():
            if isinstance(part, Paragraph):
                text = part.text.strip()
                style = (part.style.name or "") if part.style is not None else ""
                if text:
                    pieces.append((text, style.startswith(("Heading", "Title"))))
            elif isinstance(part, Table):
                for row in part.rows:
                    cells = [cell.text.strip() for cell in row.cells]
                    line = " | ".join(dict.fromkeys(c for c in cells if c))  # merged cells repeat
                    if line:
                        pieces.append((line, False))
    except UnreadableDocument:
        raise
    except Exception as exc:
        raise UnreadableDocument("the DOCX is corrupt") from exc
    return ParsedDocument(list(_with_headings(pieces)), None)


# -- HTML --------------------------------------------------------------------------------------------

_DROPPED = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "canvas", "head")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BLOCKS = (
    "p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "td", "th", "section", "article",
    "header", "footer", "nav", "aside", "main", "dt", "dd", "br", "hr", "figcaption", "address",
)  # fmt: skip
# Decoded text never holds a NUL (detect.decode_text): a safe mark for a heading line.
_HEADING_MARK = "\x00"


def _html_blocks(text: str) -> Iterator[tuple[str, bool]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title is not None else ""
    for tag in soup.find_all(_DROPPED):
        tag.decompose()
    for tag in soup.find_all(_HEADINGS):
        tag.replace_with(f"\n\n{_HEADING_MARK}{tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all(_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    if title:
        yield title, True
    for paragraph in _paragraphs(soup.get_text()):
        if paragraph.startswith(_HEADING_MARK):
            heading = paragraph.lstrip(_HEADING_MARK).strip()
            if heading:
                yield heading, True
        else:
            yield paragraph.replace(_HEADING_MARK, ""), False


# -- Markdown ----------------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _markdown_blocks(text: str) -> Iterator[tuple[str, bool]]:
    lines = text.replace("\r\n", "\n").split("\n")
    paragraph: list[str] = []
    in_fence = False

    def flush() -> Iterator[tuple[str, bool]]:
        joined = "\n".join(paragraph).strip()
        paragraph.clear()
        if joined:
            yield joined, False

    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
            paragraph.append(line)
            continue
        if in_fence:
            paragraph.append(line)
            continue
        atx = _ATX.match(line)
        if atx and atx.group(2):
            yield from flush()
            yield atx.group(2).strip(), True
        elif _SETEXT.match(line) and len(paragraph) == 1 and paragraph[0].strip():
            heading = paragraph[0].strip()
            paragraph.clear()
            yield heading, True
        elif not line.strip():
            yield from flush()
        else:
            paragraph.append(line)
    yield from flush()
