"""Search over everything a user knows: memories and passages of their documents, ranked together
by the one index (pai_core.search), each hit then read by key so that nothing deleted meanwhile is
ever returned. What /search and /chat call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from pai_core.documents.records import Document, StoredPassage
from pai_core.models import ItemKind, Memory, RankedItem, SearchHit
from pai_core.ports import Embedder, MemorySearchIndex

Source = Literal["memories", "documents"]
SOURCES: tuple[Source, ...] = ("memories", "documents")
# With one kind asked for, the index ranks every kind: this many times `top` are ranked so that
# enough of the one kind are among them. (The index has no filter by kind; a ranking of one kind
# could still fall short when the other kind dominates the top of it.)
_ONE_KIND_FACTOR = 4
_MAX_RANKED = 200
_KINDS_OF: dict[Source, ItemKind] = {"memories": "memory", "documents": "passage"}


def rank_kinds(
    index: MemorySearchIndex,
    owner: str,
    vector: npt.NDArray[np.float32],
    *,
    text: str,
    kinds: set[ItemKind],
    top: int,
    category: str | None,
    min_score: float | None,
) -> list[RankedItem]:
    """The index's ranking of the owner's items of `kinds`, best first: the one place that knows the
    index ranks every kind together. With one kind it may hold more than `top`: the caller keeps the
    first `top` of them that still exist."""
    every_kind = kinds >= {"memory", "passage"}
    ranked_top = top if every_kind else min(_MAX_RANKED, top * _ONE_KIND_FACTOR)
    ranked = index.search(owner, vector, text=text, top=ranked_top, category=category, min_score=min_score)
    return ranked if every_kind else [hit for hit in ranked if hit.ref.kind in kinds]


@dataclass(frozen=True)
class PassageHit:
    passage: StoredPassage
    document: Document
    score: float


Hit = SearchHit | PassageHit


class MemoryReader(Protocol):
    def get_many(self, owner: str, memory_ids: Sequence[str]) -> dict[str, Memory]: ...


class PassageReader(Protocol):
    def documents_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, Document]: ...

    def passages_by_id(self, owner: str, ids: Sequence[str]) -> dict[str, StoredPassage]: ...


class RetrievalService:
    def __init__(
        self, memories: MemoryReader, documents: PassageReader, embedder: Embedder, index: MemorySearchIndex
    ) -> None:
        self._memories = memories
        self._documents = documents
        self._embedder = embedder
        self._index = index

    def search(
        self,
        owner: str,
        query: str,
        *,
        top: int,
        category: str | None = None,
        min_score: float | None = None,
        sources: Sequence[Source] = SOURCES,
        before_fetch: Callable[[], None] | None = None,
    ) -> list[Hit]:
        """Best first, at most `top`: memories and document passages (of documents still there).

        `before_fetch` runs once ranking is done and before anything is read (a request's
        admission, pai_core.limits): what it raises ends the search with nothing read."""
        wanted = set(sources)
        if top <= 0 or not wanted:
            return []
        vector = self._embedder.embed([query])[0]
        kinds = {_KINDS_OF[source] for source in wanted}
        ranked = rank_kinds(
            self._index, owner, vector, text=query, kinds=kinds, top=top, category=category, min_score=min_score
        )
        if before_fetch is not None:
            before_fetch()
        memory_ids = [r.ref.id for r in ranked if r.ref.kind == "memory"]
        passage_ids = [r.ref.id for r in ranked if r.ref.kind == "passage"]
        memories = self._memories.get_many(owner, memory_ids) if memory_ids else {}
        passages = self._documents.passages_by_id(owner, passage_ids) if passage_ids else {}
        documents = (
            self._documents.documents_by_id(owner, [p.document_id for p in passages.values()]) if passages else {}
        )
        hits: list[Hit] = []
        for r in ranked:
            if r.ref.kind == "memory" and r.ref.id in memories:
                hits.append(SearchHit(memory=memories[r.ref.id], score=r.score))
            elif r.ref.kind == "passage" and r.ref.id in passages:
                passage = passages[r.ref.id]
                document = documents.get(passage.document_id)
                # A passage whose document was deleted, or is still being ingested, is never a hit.
                if document is not None and document.status == "ready":
                    hits.append(PassageHit(passage=passage, document=document, score=r.score))
            if len(hits) == top:
                break
        return hits
