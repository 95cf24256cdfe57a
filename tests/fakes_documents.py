"""In-memory fakes of the knowledge base's storage, and an index that ranks memories and passages
together by reading every item (enough for handler and service tests)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pai_core.documents.records import Document, DocumentPage, DocumentTotals, StoredPassage
from pai_core.errors import Conflict
from pai_core.models import VECTOR_DTYPE, IndexedItem, ItemRef, RankedItem
from pai_core.ports import IndexSource
from pai_core.search.exact import top_k


@dataclass
class InMemoryDocumentRepository:
    documents: dict[tuple[str, str], Document] = field(default_factory=dict)
    passages: dict[tuple[str, str], tuple[StoredPassage, bytes]] = field(default_factory=dict)
    prints: dict[tuple[str, str], str] = field(default_factory=dict)
    fingerprints: dict[tuple[str, str], str] = field(default_factory=dict)
    announced: list[tuple[str, str]] = field(default_factory=list)  # passages put in the change log

    def add(
        self, owner: str, document: Document, passages: Sequence[tuple[StoredPassage, bytes]], *, fingerprint: str
    ) -> None:
        if (owner, document.id) in self.documents:
            raise Conflict("a document with this id already exists")
        for passage, vector in passages:
            self.passages[(owner, passage.id)] = (passage, vector)
        self.documents[(owner, document.id)] = document
        self.prints[(owner, fingerprint)] = document.id
        self.fingerprints[(owner, document.id)] = fingerprint

    def add_processing(self, owner: str, document: Document, *, fingerprint: str) -> None:
        self.add(owner, document, [], fingerprint=fingerprint)

    def put_passages(self, owner: str, passages: Sequence[tuple[StoredPassage, bytes]]) -> None:
        for passage, vector in passages:
            self.passages[(owner, passage.id)] = (passage, vector)

    def mark_ready(self, owner: str, document_id: str, passage_ids: Sequence[str]) -> bool:
        document = self.documents.get((owner, document_id))
        if document is None or document.status != "processing":
            return False
        self.documents[(owner, document_id)] = replace(document, status="ready", passages=len(passage_ids))
        self.announced.extend((owner, i) for i in passage_ids)
        return True

    def announce(self, owner: str, passage_ids: Sequence[str]) -> None:
        self.announced.extend((owner, i) for i in passage_ids)

    def mark_failed(self, owner: str, document_id: str, reason: str) -> bool:
        document = self.documents.get((owner, document_id))
        if document is None or document.status != "processing":
            return False
        self.documents[(owner, document_id)] = replace(document, status="failed", failure=reason, passages=0)
        return True

    def remove_passages(self, owner: str, document_id: str) -> int:
        doomed = [k for k, (p, _) in self.passages.items() if k[0] == owner and p.document_id == document_id]
        for key in doomed:
            del self.passages[key]
        return len(doomed)

    def delete(self, owner: str, document_id: str) -> Document | None:
        document = self.documents.pop((owner, document_id), None)
        if document is None:
            return None
        for key in [k for k, (p, _) in self.passages.items() if k[0] == owner and p.document_id == document_id]:
            del self.passages[key]
        fingerprint = self.fingerprints.pop((owner, document_id), None)
        if fingerprint is not None:
            self.prints.pop((owner, fingerprint), None)
        return document

    def get(self, owner: str, document_id: str) -> Document | None:
        return self.documents.get((owner, document_id))

    def by_fingerprint(self, owner: str, fingerprint: str) -> Document | None:
        document_id = self.prints.get((owner, fingerprint))
        return None if document_id is None else self.get(owner, document_id)

    def totals(self, owner: str) -> DocumentTotals:
        mine = [d for (o, _), d in self.documents.items() if o == owner]
        return DocumentTotals(
            documents=len(mine), bytes=sum(d.bytes for d in mine), passages=sum(d.passages for d in mine)
        )

    def page(self, owner: str, *, limit: int, cursor: str | None) -> DocumentPage:
        ids = sorted((i for (o, i) in self.documents if o == owner), reverse=True)
        if cursor is not None:
            ids = [i for i in ids if i < cursor]
        chosen = ids[:limit]
        more = len(ids) > limit
        return DocumentPage([self.documents[(owner, i)] for i in chosen], chosen[-1] if more else None)

    def documents_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, Document]:
        return {i: self.documents[(owner, i)] for i in ids if (owner, i) in self.documents}

    def passages_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, StoredPassage]:
        return {i: self.passages[(owner, i)][0] for i in ids if (owner, i) in self.passages}

    def all_items(self, owner: str) -> list[IndexedItem]:
        return [
            IndexedItem(ItemRef("passage", p.id), p.category, v, p.text)
            for (o, _), (p, v) in self.passages.items()
            if o == owner
            and (owner, p.document_id) in self.documents
            and self.documents[(owner, p.document_id)].status == "ready"
        ]

    def items_by_id(self, owner: str, ids: Sequence[str]) -> list[IndexedItem]:
        wanted = set(ids)
        return [item for item in self.all_items(owner) if item.ref.id in wanted]

    def purge(self, owner: str) -> int:
        mine = [k for k in self.documents if k[0] == owner]
        for key in mine:
            self.delete(owner, key[1])
        return len(mine)


@dataclass
class InMemoryDocumentFiles:
    objects: dict[tuple[str, str, str], bytes] = field(default_factory=dict)

    def put(self, owner: str, document_id: str, purpose: str, payload: bytes) -> None:
        self.objects[(owner, document_id, purpose)] = payload

    def get(self, owner: str, document_id: str, purpose: str) -> bytes | None:
        return self.objects.get((owner, document_id, purpose))

    def delete(self, owner: str, document_id: str) -> int:
        doomed = [k for k in self.objects if k[:2] == (owner, document_id)]
        for key in doomed:
            del self.objects[key]
        return len(doomed)

    def purge(self, owner: str) -> int:
        doomed = [k for k in self.objects if k[0] == owner]
        for key in doomed:
            del self.objects[key]
        return len(doomed)


class ScanningIndex:
    """Ranks every item of every source at each search (nothing kept in between)."""

    def __init__(self, sources: Iterable[IndexSource]) -> None:
        self._sources = list(sources)

    def search(
        self,
        owner: str,
        query: np.ndarray,
        *,
        text: str = "",
        top: int,
        category: str | None,
        min_score: float | None,
    ) -> list[RankedItem]:
        rows = [
            item
            for source in self._sources
            for item in source.all_items(owner)
            if category is None or item.category == category
        ]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row.vector for row in rows), dtype=VECTOR_DTYPE).reshape(len(rows), -1)
        return [RankedItem(ref=rows[i].ref, score=s) for i, s in top_k(matrix, query, top, min_score=min_score)]

    def put(self, owner: str, item: IndexedItem) -> None:
        """Nothing is kept between searches."""

    def removed(self, owner: str, ref: ItemRef) -> None:
        """Nothing is kept between searches."""


_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """A tokenizer for tests: one token per whitespace-separated word."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def fake_fingerprint(owner: str, content: bytes) -> str:
    return hmac.new(b"test fingerprint key", owner.encode() + b"\x00" + content, hashlib.sha256).hexdigest()
