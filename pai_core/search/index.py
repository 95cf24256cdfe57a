"""One owner's indexed items (memories, passages: keyed by ItemRef) in memory: exact cosine top-k
with numpy, and above a size threshold an approximate (HNSW) index from usearch that proposes
candidates for the exact scores to rank.

Rows are float32 (1,536 bytes for 384 dimensions) because BLAS multiplies float32 fast and the
scores are then exactly the stored vectors' cosines. A deleted row is marked dead and skipped; dead
rows are compacted away once they are a quarter of the matrix. The approximate index stores its
own int8 copy of each vector (384 bytes) and a graph (~2 x connectivity x 4 bytes per vector at its
base layer); its scores are never returned: every candidate is re-scored from the float32 row.

Items' texts are not held here: the lexical index beside it (pai_core.search.hybrid) holds their
statistics.

Not thread-safe: the caller (search.live) holds one lock per owner.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pai_core.models import VECTOR_DTYPE, IndexedItem, ItemKind, ItemRef, RankedItem
from pai_core.search.exact import top_k_scores
from pai_core.search.snapshot import IndexSnapshot

if TYPE_CHECKING:
    from usearch.index import Index as UsearchIndex

log = logging.getLogger(__name__)

_MIN_CAPACITY = 1024
_GROWTH = 1.5
_COMPACT_FRACTION = 0.25
# Below this share of the live rows, a category is searched exactly (its rows are too rare among
# the approximate index's candidates).
_ANN_MIN_CATEGORY_SHARE = 0.1


@dataclass(frozen=True)
class AnnSettings:
    """When and how the approximate index is used. The defaults are measured by `make bench`
    (benchmarks/RESULTS.md): below `threshold` live vectors exact search costs under ~1.5 ms and
    needs no build; above it exact grows linearly while HNSW stays well under a millisecond, at
    recall@10 >= 0.98 with these parameters."""

    threshold: int = 50_000
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 256
    dtype: str = "i8"
    # Candidates asked of the approximate index per requested result (at least `min_candidates`).
    oversample: int = 4
    min_candidates: int = 64

    def as_dict(self) -> dict[str, int | str]:
        return {
            "connectivity": self.connectivity,
            "expansionAdd": self.expansion_add,
            "dtype": self.dtype,
        }


class VectorIndex:
    def __init__(self, dimensions: int, *, ann: AnnSettings | None = None, capacity: int = 0) -> None:
        self.dimensions = dimensions
        self._ann_settings = ann
        capacity = max(capacity, _MIN_CAPACITY)
        self._matrix = np.zeros((capacity, dimensions), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._codes = np.zeros(capacity, dtype=np.uint32)
        self._size = 0  # rows in use, live and dead
        self._refs: list[ItemRef | None] = []  # per row; None once the row is dead
        self._rows: dict[ItemRef, int] = {}  # live refs only
        self._categories: list[str] = []
        self._code_of: dict[str, int] = {}
        self._category_counts: list[int] = []
        self._ann: UsearchIndex | None = None

    # -- what is in it -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, ref: object) -> bool:
        return ref in self._rows

    @property
    def approximate(self) -> bool:
        return self._ann is not None

    @property
    def dead_rows(self) -> int:
        return self._size - len(self._rows)

    def refs(self) -> set[ItemRef]:
        return set(self._rows)

    def ids(self, kind: ItemKind = "memory") -> set[str]:
        """The ids of the live items of one kind."""
        return {ref.id for ref in self._rows if ref.kind == kind}

    def category(self, ref: ItemRef) -> str | None:
        row = self._rows.get(ref)
        return None if row is None else self._categories[self._codes[row]]

    def memory_bytes(self) -> int:
        """Bytes held by the arrays and the approximate index (not Python's per-id overhead)."""
        arrays = self._matrix.nbytes + self._alive.nbytes + self._codes.nbytes
        return arrays + (int(self._ann.memory_usage) if self._ann is not None else 0)

    # -- changes -----------------------------------------------------------------------------------

    def add(self, items: Iterable[IndexedItem]) -> int:
        """Adds the items whose ref is not in the index yet; returns how many were new."""
        fresh = self._usable(item for item in items if item.ref not in self._rows)
        return self._add_fresh(fresh)

    def put(self, items: Iterable[IndexedItem]) -> int:
        """Adds the items, replacing any already there by their ref (an update: new vector or
        category); returns how many rows changed."""
        fresh = self._usable(items)
        self.remove([ref for ref in fresh if ref in self._rows])
        self._add_fresh(fresh)
        return len(fresh)

    def _usable(self, items: Iterable[IndexedItem]) -> dict[ItemRef, IndexedItem]:
        expected = self.dimensions * VECTOR_DTYPE.itemsize
        fresh: dict[ItemRef, IndexedItem] = {}
        for item in items:
            if len(item.vector) != expected:
                log.warning("skipping a stored vector of %d bytes (expected %d)", len(item.vector), expected)
                continue
            fresh[item.ref] = item  # the last of one ref wins
        return fresh

    def _add_fresh(self, fresh: dict[ItemRef, IndexedItem]) -> int:
        if not fresh:
            return 0
        matrix = np.frombuffer(b"".join(item.vector for item in fresh.values()), dtype=VECTOR_DTYPE)
        return self.add_rows(
            list(fresh),
            [item.category for item in fresh.values()],
            matrix.reshape(len(fresh), -1),
        )

    def add_rows(
        self,
        refs: Sequence[ItemRef],
        categories: Sequence[str],
        matrix: npt.NDArray[np.float32],
    ) -> int:
        """Adds rows given as arrays (refs not in the index yet, unit vectors)."""
        count = len(refs)
        if count == 0:
            return 0
        if matrix.shape != (count, self.dimensions) or len(categories) != count:
            raise ValueError("refs, categories and vectors disagree")
        start = self._size
        self._reserve(start + count)
        self._matrix[start : start + count] = matrix
        self._alive[start : start + count] = True
        self._codes[start : start + count] = [self._code(category) for category in categories]
        for offset, ref in enumerate(refs):
            self._rows[ref] = start + offset
            self._category_counts[self._codes[start + offset]] += 1
        self._refs.extend(refs)
        self._size += count
        if self._ann is not None:
            self._ann.add(np.arange(start, start + count, dtype=np.uint64), self._matrix[start : start + count])
        else:
            self._build_ann_if_large()
        return count

    def remove(self, refs: Iterable[ItemRef]) -> int:
        removed = 0
        for ref in list(refs):
            row = self._rows.pop(ref, None)
            if row is None:
                continue
            self._alive[row] = False
            self._refs[row] = None
            self._category_counts[self._codes[row]] -= 1
            if self._ann is not None:
                self._ann.remove(row)
            removed += 1
        if removed:
            if self._ann is not None and self._ann_settings and len(self) < self._ann_settings.threshold // 2:
                self._ann = None  # small again: exact is as fast, and the memory is freed
            if self.dead_rows > max(_MIN_CAPACITY, int(self._size * _COMPACT_FRACTION)):
                self._compact()
        return removed

    # -- search ------------------------------------------------------------------------------------

    def search(
        self, query: npt.NDArray[np.float32], top: int, *, category: str | None = None, min_score: float | None = None
    ) -> list[RankedItem]:
        """Refs and cosine scores of the best `top` live rows, best first."""
        if top <= 0 or not self._rows:
            return []
        code = None
        if category is not None:
            code = self._code_of.get(category)
            if code is None or self._category_counts[code] == 0:
                return []
        query = np.asarray(query, dtype=np.float32)
        if self._ann is not None and self._ann_settings is not None:
            eligible = len(self) if code is None else self._category_counts[code]
            if eligible >= _ANN_MIN_CATEGORY_SHARE * len(self):
                found = self._search_approximate(query, top, code=code, eligible=eligible, min_score=min_score)
                if found is not None:
                    return found
        return self._search_exact(query, top, code=code, min_score=min_score)

    def search_exact(
        self, query: npt.NDArray[np.float32], top: int, *, category: str | None = None, min_score: float | None = None
    ) -> list[RankedItem]:
        """Exact search whatever the size (the benchmark's reference for recall)."""
        code = self._code_of.get(category) if category is not None else None
        if category is not None and code is None:
            return []
        return self._search_exact(np.asarray(query, dtype=np.float32), top, code=code, min_score=min_score)

    def scores_of(
        self, query: npt.NDArray[np.float32], refs: Sequence[ItemRef], *, category: str | None = None
    ) -> npt.NDArray[np.float32]:
        """The exact cosine of `query` with each of `refs`, in order: the dense half of hybrid
        ranking for candidates the lexical index proposed. -inf (not a candidate) for a ref not held
        or, when `category` is given, of another category."""
        rows = np.array([self._rows.get(ref, -1) for ref in refs], dtype=np.int64)
        eligible = rows >= 0
        if category is not None:
            code = self._code_of.get(category)
            if code is None:
                eligible[:] = False
            else:
                eligible &= self._codes[np.maximum(rows, 0)] == code
        scores = np.full(rows.shape[0], -np.inf, dtype=np.float32)
        if eligible.any():
            cosines = self._matrix[rows[eligible]] @ np.asarray(query, dtype=np.float32)
            scores[eligible] = np.clip(cosines, -1.0, 1.0)
        return scores

    def _search_exact(
        self, query: npt.NDArray[np.float32], top: int, *, code: int | None, min_score: float | None
    ) -> list[RankedItem]:
        size = self._size
        scores = self._matrix[:size] @ query
        if len(self._rows) < size:
            scores[~self._alive[:size]] = -np.inf
        if code is not None:
            scores[self._codes[:size] != code] = -np.inf
        return self._ranked(top_k_scores(scores, top, min_score=min_score))

    def _search_approximate(
        self, query: npt.NDArray[np.float32], top: int, *, code: int | None, eligible: int, min_score: float | None
    ) -> list[RankedItem] | None:
        """None when the candidates cannot be trusted to hold the answer (then exact decides)."""
        assert self._ann is not None and self._ann_settings is not None
        settings = self._ann_settings
        wanted = max(top * settings.oversample, settings.min_candidates)
        if code is not None:
            wanted = math.ceil(wanted * len(self) / max(eligible, 1))
        wanted = min(wanted, len(self))
        matches = self._ann.search(query, wanted, threads=1)
        rows = np.asarray(matches.keys, dtype=np.int64)
        rows = rows[(rows >= 0) & (rows < self._size)]
        rows = rows[self._alive[rows]]
        if code is not None:
            rows = rows[self._codes[rows] == code]
        if rows.shape[0] < min(top, eligible):
            return None
        scores = self._matrix[rows] @ query
        return self._ranked((int(rows[i]), score) for i, score in top_k_scores(scores, top, min_score=min_score))

    def _ranked(self, rows_and_scores: Iterable[tuple[int, float]]) -> list[RankedItem]:
        ranked: list[RankedItem] = []
        for row, score in rows_and_scores:
            ref = self._refs[row]
            if ref is not None:  # only live rows score above -inf
                ranked.append(RankedItem(ref=ref, score=score))
        return ranked

    # -- snapshots ---------------------------------------------------------------------------------

    def snapshot(
        self,
        *,
        position: str,
        stamp: int,
        taken_at: float,
        generation: int,
        applied: Sequence[str] = (),
        lexical: bytes = b"",
    ) -> IndexSnapshot:
        """`lexical`: the serialized lexical index over the same items, sealed in the same snapshot."""
        size = self._size
        ann = None
        if self._ann is not None:
            saved = self._ann.save()
            ann = bytes(saved) if saved is not None else None
        return IndexSnapshot(
            refs=list(self._refs),
            lexical=lexical,
            alive=self._alive[:size].copy(),
            codes=self._codes[:size].copy(),
            categories=list(self._categories),
            vectors=self._matrix[:size],
            ann=ann,
            ann_settings=self._ann_settings.as_dict() if ann is not None and self._ann_settings else None,
            position=position,
            applied=list(applied),
            stamp=stamp,
            taken_at=taken_at,
            generation=generation,
        )

    @classmethod
    def from_snapshot(cls, snapshot: IndexSnapshot, *, ann: AnnSettings | None) -> VectorIndex:
        rows, dimensions = snapshot.vectors.shape
        index = cls(dimensions, ann=ann, capacity=rows + max(_MIN_CAPACITY, rows // 16))
        index._categories = list(snapshot.categories)
        index._code_of = {name: code for code, name in enumerate(index._categories)}
        index._category_counts = [0] * len(index._categories)
        index._matrix[:rows] = snapshot.vectors
        index._alive[:rows] = snapshot.alive
        index._codes[:rows] = snapshot.codes
        index._refs = [ref if alive else None for ref, alive in zip(snapshot.refs, snapshot.alive, strict=True)]
        index._size = rows
        for row in np.flatnonzero(snapshot.alive):
            ref = snapshot.refs[row]
            if ref is None:
                raise ValueError("a live row of the snapshot has no ref")
            index._rows[ref] = int(row)
            index._category_counts[snapshot.codes[row]] += 1
        serialized = snapshot.ann
        if ann is not None and serialized is not None and snapshot.ann_settings == ann.as_dict():
            try:
                restored = _restore_ann(serialized, ann)
            except (RuntimeError, ValueError) as exc:
                log.warning("index snapshot's approximate index does not load (%s); rebuilding it", exc)
            else:
                if len(restored) == len(index):
                    index._ann = restored
                else:
                    log.warning("index snapshot's approximate index disagrees with its rows; rebuilding it")
        if index._ann is None:
            index._build_ann_if_large()
        return index

    # -- internals ---------------------------------------------------------------------------------

    def _code(self, category: str) -> int:
        code = self._code_of.get(category)
        if code is None:
            code = len(self._categories)
            self._categories.append(category)
            self._code_of[category] = code
            self._category_counts.append(0)
        return code

    def _reserve(self, rows: int) -> None:
        capacity = self._matrix.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, int(capacity * _GROWTH))
        matrix = np.zeros((capacity, self.dimensions), dtype=np.float32)
        matrix[: self._size] = self._matrix[: self._size]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self._size] = self._alive[: self._size]
        codes = np.zeros(capacity, dtype=np.uint32)
        codes[: self._size] = self._codes[: self._size]
        self._matrix, self._alive, self._codes = matrix, alive, codes

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[: self._size])
        count = keep.shape[0]
        capacity = max(_MIN_CAPACITY, int(count * _GROWTH))
        matrix = np.zeros((capacity, self.dimensions), dtype=np.float32)
        matrix[:count] = self._matrix[keep]
        alive = np.zeros(capacity, dtype=bool)
        alive[:count] = True
        codes = np.zeros(capacity, dtype=np.uint32)
        codes[:count] = self._codes[keep]
        self._refs = [self._refs[row] for row in keep]
        self._rows = {ref: row for row, ref in enumerate(self._refs) if ref is not None}
        self._matrix, self._alive, self._codes, self._size = matrix, alive, codes, count
        if self._ann is not None:
            self._ann = None
            self._build_ann_if_large()

    def _build_ann_if_large(self) -> None:
        settings = self._ann_settings
        if settings is None or self._ann is not None or len(self) < settings.threshold:
            return
        rows = np.flatnonzero(self._alive[: self._size])
        ann = _new_ann(self.dimensions, settings)
        ann.add(rows.astype(np.uint64), self._matrix[rows])
        self._ann = ann


def _new_ann(dimensions: int, settings: AnnSettings) -> UsearchIndex:
    from usearch.index import Index

    return Index(
        ndim=dimensions,
        metric="ip",  # unit vectors: inner product is the cosine
        dtype=settings.dtype,
        connectivity=settings.connectivity,
        expansion_add=settings.expansion_add,
        expansion_search=settings.expansion_search,
    )


def _restore_ann(serialized: bytes, settings: AnnSettings) -> UsearchIndex:
    from usearch.index import Index

    restored: Any = Index.restore(serialized)
    if restored is None:
        raise ValueError("approximate index does not restore")
    restored.expansion_search = settings.expansion_search  # not part of the serialization
    return restored  # type: ignore[no-any-return]
