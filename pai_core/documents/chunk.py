"""Passages: a document's blocks split by structure first (a new heading or page starts a new
passage), then packed or cut to the embedding model's window.

Paragraphs of one section are packed together while they fit `max_tokens`; a paragraph longer than
that is cut into windows of `max_tokens` tokens, each overlapping the one before by `overlap`
tokens, at token boundaries the tokenizer reports (so a word is never cut inside a word piece). A
passage belongs to the page it starts on and carries the nearest heading above it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from pai_core.documents.parse import Block

# The character span of each token of a text, in order (the embedder's tokenizer, without truncation).
TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 24


@dataclass(frozen=True)
class Passage:
    text: str
    page: int | None
    heading: str | None


def split_passages(
    blocks: Iterable[Block],
    spans: TokenSpans,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Passage]:
    if not 0 <= overlap < max_tokens:
        raise ValueError("the overlap is smaller than a passage")
    passages: list[Passage] = []
    packed: list[str] = []
    packed_tokens = 0
    section: tuple[int | None, str | None] | None = None

    def flush() -> None:
        nonlocal packed_tokens
        if packed and section is not None:
            passages.append(Passage("\n\n".join(packed), section[0], section[1]))
        packed.clear()
        packed_tokens = 0

    for block in blocks:
        if block.is_heading:
            flush()
            section = (block.page, block.heading)
            continue
        key = (block.page, block.heading)
        if key != section:
            flush()
            section = key
        token_spans = spans(block.text)
        if len(token_spans) > max_tokens:
            flush()
            passages.extend(
                Passage(piece, block.page, block.heading)
                for piece in _windows(block.text, token_spans, max_tokens, overlap)
            )
            continue
        if packed and packed_tokens + len(token_spans) > max_tokens:
            flush()
        packed.append(block.text)
        packed_tokens += len(token_spans)
    flush()
    return passages


def _windows(text: str, spans: Sequence[tuple[int, int]], size: int, overlap: int) -> Iterator[str]:
    step = size - overlap
    start = 0
    while start < len(spans):
        end = min(start + size, len(spans))
        piece = text[spans[start][0] : spans[end - 1][1]].strip()
        if piece:
            yield piece
        if end == len(spans):
            break
        start += step
