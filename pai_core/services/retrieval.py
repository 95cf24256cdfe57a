"""Search over everything a user knows: memories and passages of their documents, ranked together
by the one index (pai_core.search), each hit then read by key so that nothing deleted meanwhile is
ever returned. What /search and /chat call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pai_core.documents.records import Document, StoredPassage
from pai_core.models import Memory, SearchHit
from pai_core.ports import Embedder, MemorySearchIndex

Source = Literal["memories", "documents"]
SOURCES: tuple[Source, ...] = ("memories", "documents")
# With one source asked for, the index ranks both: this many times `top` are ranked so that enough
# of the one kind are among them. (The index has no filter by kind; a ranking of one kind could
# still fall short when the other kind dominates the top of it.)
_ONE_SOURCE_FACTOR = 4
_MAX_RANKED = 200


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
        ranked_top = top if wanted == set(SOURCES) else min(_MAX_RANKED, top * _ONE_SOURCE_FACTOR)
        vector = self._embedder.embed([query])[0]
        ranked = self._index.search(owner, vector, text=query, top=ranked_top, category=category, min_score=min_score)
        if before_fetch is not None:
            before_fetch()
        memory_ids = [r.ref.id for r in ranked if r.ref.kind == "memory"] if "memories" in wanted else []
        passage_ids = [r.ref.id for r in ranked if r.ref.kind == "passage"] if "documents" in wanted else []
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
