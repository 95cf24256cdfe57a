"""One owner's search index: the dense VectorIndex and the lexical (BM25) LexicalIndex over the same
items, kept in step under the same keys, ranked together by pai_core.search.fusion.

The lexical index is keyed by strings: an item's key is `ref_key(ref)` ("kind:id", the form the
snapshot's refs section uses). Every change goes to both; an item's time for the lexical index's
neighbours is the creation time of its time-ordered id, so an update keeps its place.

Ranking `"hybrid"` (the default): the dense side proposes candidates (exact, or through its
approximate index above its threshold) and scores any key exactly (`scores_of`); a key the dense side
rules out (not held, another category) scores -inf there and is never returned. `"dense"`: the
cosine alone, as before hybrid ranking (the benchmark's baseline, and an escape hatch); the lexical
index is still kept, so a snapshot serves either.

Not thread-safe: the caller (search.live) holds one lock per owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from pai_core.ids import id_millis
from pai_core.models import IndexedItem, ItemKind, ItemRef, RankedItem
from pai_core.search.fusion import DEFAULT_FUSION, FusionSettings, hybrid_search
from pai_core.search.index import AnnSettings, VectorIndex
from pai_core.search.lexical import LexicalIndex
from pai_core.search.snapshot import IndexSnapshot

Ranking = Literal["dense", "hybrid"]
RANKINGS: tuple[Ranking, ...] = ("dense", "hybrid")


def ref_key(ref: ItemRef) -> str:
    return f"{ref.kind}:{ref.id}"


def key_ref(key: str) -> ItemRef:
    kind, _, item_id = key.partition(":")
    return ItemRef(cast(ItemKind, kind), item_id)


def time_of(ref: ItemRef) -> float:
    """An item's place in time for the lexical index's neighbours (milliseconds): its time-ordered
    id's creation time; for a passage ("{document id}#{number}"), its document's plus its number, so
    a document's passages sit next to each other in order. 0 for an id that carries no time."""
    millis = id_millis(ref.id)
    if millis is not None:
        return float(millis)
    document, _, number = ref.id.rpartition("#")
    millis = id_millis(document)
    if millis is not None and number.isdigit():
        return float(millis + int(number))
    return 0.0


class HybridIndex:
    """A VectorIndex and a LexicalIndex holding the same items; see the module docstring."""

    def __init__(self, vectors: VectorIndex, lexical: LexicalIndex, *, refs: dict[str, ItemRef] | None = None) -> None:
        self.vectors = vectors
        self.lexical = lexical
        # The ref of each key the lexical index holds: fusion scores a few hundred keys per search,
        # and building a ref from its key each time cost more than the scoring.
        self._refs: dict[str, ItemRef] = refs if refs is not None else {ref_key(r): r for r in vectors.refs()}

    @classmethod
    def empty(cls, dimensions: int, *, ann: AnnSettings | None) -> HybridIndex:
        return cls(VectorIndex(dimensions, ann=ann), LexicalIndex())

    # -- what is in it -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, ref: object) -> bool:
        return ref in self.vectors

    def refs(self) -> set[ItemRef]:
        return self.vectors.refs()

    def ids(self, kind: ItemKind = "memory") -> set[str]:
        return self.vectors.ids(kind)

    def category(self, ref: ItemRef) -> str | None:
        return self.vectors.category(ref)

    @property
    def approximate(self) -> bool:
        return self.vectors.approximate

    def memory_bytes(self) -> int:
        """The vectors' arrays and approximate index (see VectorIndex.memory_bytes)."""
        return self.vectors.memory_bytes()

    # -- changes -----------------------------------------------------------------------------------

    def add(self, items: Iterable[IndexedItem]) -> int:
        """Adds the items whose ref is not held yet; returns how many were new."""
        fresh = [item for item in items if item.ref not in self.vectors]
        added = self.vectors.add(fresh)
        self._index_texts(item for item in fresh if item.ref in self.vectors)
        return added

    def put(self, items: Iterable[IndexedItem]) -> int:
        """Adds the items, replacing any held under their ref (an update); returns how many changed."""
        items = list(items)
        changed = self.vectors.put(items)
        self._index_texts(item for item in items if item.ref in self.vectors)
        return changed

    def add_rows(
        self, refs: Sequence[ItemRef], categories: Sequence[str], matrix: npt.NDArray[np.float32], texts: Sequence[str]
    ) -> int:
        """Adds rows given as arrays (refs not held yet, unit vectors), with their texts."""
        if len(texts) != len(refs):
            raise ValueError("refs and texts disagree")
        added = self.vectors.add_rows(refs, categories, matrix)
        for ref, text in zip(refs, texts, strict=True):
            key = ref_key(ref)
            self.lexical.add(key, text, time=time_of(ref))
            self._refs[key] = ref
        return added

    def remove(self, refs: Iterable[ItemRef]) -> int:
        refs = list(refs)
        keys = [ref_key(ref) for ref in refs]
        self.lexical.remove(keys)
        for key in keys:
            self._refs.pop(key, None)
        return self.vectors.remove(refs)

    def _index_texts(self, items: Iterable[IndexedItem]) -> None:
        for item in items:
            key = ref_key(item.ref)
            self.lexical.add(key, item.text, time=time_of(item.ref))
            self._refs[key] = item.ref

    # -- search ------------------------------------------------------------------------------------

    def search(
        self,
        query: npt.NDArray[np.float32],
        top: int,
        *,
        text: str,
        category: str | None = None,
        min_score: float | None = None,
        ranking: Ranking = "hybrid",
        fusion: FusionSettings = DEFAULT_FUSION,
    ) -> list[RankedItem]:
        """The best `top` items for the query (its vector and its text), best first. Scores: the
        fused relevance of pai_core.search.fusion for "hybrid", the cosine for "dense"; `min_score`
        filters on that score."""
        if ranking == "dense":
            return self.vectors.search(query, top, category=category, min_score=min_score)
        if top <= 0 or not len(self.vectors):
            return []
        query = np.asarray(query, dtype=np.float32)
        # No floor on the candidates: an item below it on its cosine may still clear it fused.
        dense_top = self.vectors.search(query, fusion.candidates(top), category=category)
        found = hybrid_search(
            text,
            [(ref_key(hit.ref), hit.score) for hit in dense_top],
            partial(self._dense_scores, query, category=category),
            self.lexical,
            top,
            min_score=min_score,
            settings=fusion,
        )
        return [RankedItem(ref=self._ref(key), score=score) for key, score in found]

    def _ref(self, key: str) -> ItemRef:
        ref = self._refs.get(key)
        return key_ref(key) if ref is None else ref

    def _dense_scores(
        self, query: npt.NDArray[np.float32], keys: Sequence[str], *, category: str | None
    ) -> npt.NDArray[np.float32]:
        return self.vectors.scores_of(query, [self._ref(key) for key in keys], category=category)

    # -- snapshots ---------------------------------------------------------------------------------

    def snapshot(
        self, *, position: str, stamp: int, taken_at: float, generation: int, applied: Sequence[str] = ()
    ) -> IndexSnapshot:
        return self.vectors.snapshot(
            position=position,
            stamp=stamp,
            taken_at=taken_at,
            generation=generation,
            applied=applied,
            lexical=self.lexical.to_bytes(),
        )

    @classmethod
    def from_snapshot(cls, snapshot: IndexSnapshot, *, ann: AnnSettings | None) -> HybridIndex:
        """Raises ValueError when the snapshot's two halves do not load or disagree on their items."""
        lexical = LexicalIndex.from_bytes(snapshot.lexical)
        vectors = VectorIndex.from_snapshot(snapshot, ann=ann)
        refs = {ref_key(ref): ref for ref in vectors.refs()}
        if lexical.keys() != refs.keys():
            raise ValueError("the snapshot's lexical index and vectors hold different items")
        return cls(vectors, lexical, refs=refs)
