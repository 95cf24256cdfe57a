"""One owner's lexical index: BM25 over the words of each item, updated one item at a time.

Scores are BM25 Okapi with Lucene's always-positive inverse document frequency,
log(1 + (N - df + 0.5) / (df + 0.5)), computed at query time from the live statistics, so adding,
replacing or removing an item changes every later score at once (no rebuild).

Words: `tokenize` (NFKC, Unicode case folding, runs of letters and digits, English stop words and
possessive endings dropped, Snowball English stems). Stems are Snowball's pure-Python English
stemmer; a non-English word passes through it mostly unchanged, so other languages still match on
their exact words.

Each item is a row: its key, its time (milliseconds, for neighbours), its length in words and its
(term id, count) pairs; each term has a posting list of rows and counts in numpy arrays that grow by
doubling. A removed row is marked dead (its counts leave the statistics at once, its posting
entries are skipped) and rows are compacted once a quarter of them are dead.

The statistics (words, counts) are the content in another form: `to_bytes` is only ever sealed
inside the encrypted index snapshot, never written anywhere in plaintext.

Not thread-safe: the caller holds one lock per owner.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import snowballstemmer  # type: ignore[import-untyped]

# BM25's parameters: Anserini's defaults (flatter length normalization than Lucene's 1.2 / 0.75, which suits
# short memories); they measured best of the pairs tried on the dev conversations.
K1 = 0.9
B = 0.4

_WORD = re.compile(r"[^\W_]+")
_COMPACT_FRACTION = 0.25
_MIN_COMPACT_ROWS = 256
_FORMAT = 1

# English function words (Lucene's and Snowball's lists, lightly merged): they match nearly every
# memory, so they only add noise to a ranking. Single letters left by contractions ("I'm" -> "i",
# "m") go too.
_STOP_WORDS = """
    a about above after again against all am an and any are aren as at be because been before being below
    between both but by can cannot could couldn did didn do does doesn doing don down during each few for
    from further had hadn has hasn have haven having he her here hers herself him himself his how i if in
    into is isn it its itself let ll me more most mustn my myself no nor not of off on once only or other
    ought our ours ourselves out over own re same shan she should shouldn so some such than that the their
    theirs them themselves then there these they this those through to too under until up ve very was
    wasn we were weren what when where which while who whom why will with won would wouldn you your yours
    yourself yourselves
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())

_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def tokenize(text: str) -> list[str]:
    """The index terms of a text, in order (a repeated word repeats)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return [_stem(word) for word in words if len(word) > 1 and word not in STOP_WORDS]


class _Postings:
    """The rows holding one term and how often each holds it."""

    __slots__ = ("counts", "rows", "size")

    def __init__(
        self, rows: npt.NDArray[np.int32] | None = None, counts: npt.NDArray[np.float32] | None = None
    ) -> None:
        self.rows = np.empty(4, dtype=np.int32) if rows is None else rows
        self.counts = np.empty(4, dtype=np.float32) if counts is None else counts
        self.size = 0 if rows is None else rows.shape[0]

    def append(self, row: int, count: int) -> None:
        if self.size == self.rows.shape[0]:
            self.rows = np.concatenate([self.rows, np.empty_like(self.rows)])
            self.counts = np.concatenate([self.counts, np.empty_like(self.counts)])
        self.rows[self.size] = row
        self.counts[self.size] = count
        self.size += 1


class LexicalIndex:
    """BM25 over an owner's items, keyed by strings."""

    def __init__(self, *, k1: float = K1, b: float = B) -> None:
        self.k1 = k1
        self.b = b
        self._terms: dict[str, int] = {}
        self._postings: list[_Postings] = []
        self._df: list[int] = []  # live rows holding each term
        self._keys: list[str] = []  # per row; "" once dead
        self._rows: dict[str, int] = {}  # live keys only
        self._row_terms: list[npt.NDArray[np.int32]] = []
        self._row_counts: list[npt.NDArray[np.int32]] = []
        self._lengths = np.zeros(64, dtype=np.float32)  # words per row; 0 once dead
        self._times = np.zeros(64, dtype=np.float64)
        self._alive = np.zeros(64, dtype=bool)
        self._total_length = 0
        # Live rows by time and each row's neighbours, built when asked and dropped on any change.
        self._order: npt.NDArray[np.int64] | None = None
        self._neighbours: tuple[float, npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None

    # -- what is in it -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def keys(self) -> set[str]:
        return set(self._rows)

    # -- changes -----------------------------------------------------------------------------------

    def add(self, key: str, text: str, *, time: float = 0.0) -> None:
        """Indexes `text` under `key`, replacing what the key held. `time` orders items for
        `neighbours` (milliseconds; items added with equal times keep the order they came in)."""
        if key in self._rows:
            self.remove([key])
        tokens = tokenize(text)
        counts = Counter(self._term_id(token) for token in tokens)
        terms = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
        values = np.fromiter(counts.values(), dtype=np.int32, count=len(counts))
        self._append_row(key, terms, values, len(tokens), time)

    def remove(self, keys: Iterable[str]) -> int:
        """Drops the keys held; returns how many were."""
        removed = 0
        for key in keys:
            row = self._rows.pop(key, None)
            if row is None:
                continue
            for term in self._row_terms[row].tolist():
                self._df[term] -= 1
            self._total_length -= int(self._lengths[row])
            self._lengths[row] = 0
            self._alive[row] = False
            self._keys[row] = ""
            self._row_terms[row] = np.empty(0, dtype=np.int32)
            self._row_counts[row] = np.empty(0, dtype=np.int32)
            removed += 1
        if removed:
            self._order, self._neighbours = None, None
            dead = len(self._keys) - len(self._rows)
            if dead > max(_MIN_COMPACT_ROWS, int(len(self._keys) * _COMPACT_FRACTION)):
                self._compact()
        return removed

    # -- search ------------------------------------------------------------------------------------

    def query_terms(self, query: str) -> list[int]:
        """The ids of the query's words that some item holds (a repeated word counts again)."""
        found = (self._terms.get(token) for token in tokenize(query))
        return [term for term in found if term is not None and self._df[term] > 0]

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 of the query for every row (dead rows score 0); index with `key_of`/`row_of`."""
        return self._scores(self.query_terms(query))

    def search(self, query: str, top: int) -> list[tuple[str, float]]:
        """Keys and BM25 scores of the best `top` items holding a word of the query, best first."""
        scores = self.scores(query)
        if top <= 0 or scores.shape[0] == 0:
            return []
        matched = np.flatnonzero(scores > 0)
        if matched.shape[0] > top:
            matched = matched[np.argpartition(-scores[matched], top - 1)[:top]]
        ranked = matched[np.argsort(-scores[matched], kind="stable")]
        return [(self._keys[row], float(scores[row])) for row in ranked.tolist()]

    def score_keys(self, query: str, keys: Sequence[str]) -> npt.NDArray[np.float32]:
        """BM25 of the query for each of `keys` (0 for a key not held)."""
        scores = self.scores(query)
        rows = [self._rows.get(key, -1) for key in keys]
        return np.array([scores[row] if row >= 0 else 0.0 for row in rows], dtype=np.float32)

    def best_possible(self, query: str) -> float:
        """An upper bound of any item's score for the query: each term's inverse document frequency
        times k1 + 1 (the limit of its count factor). 0 when no word of the query is held."""
        return sum(self._idf(term) for term in self.query_terms(query)) * (self.k1 + 1.0)

    # -- rows (for fusion with a dense index over the same items) -----------------------------------

    @property
    def rows(self) -> int:
        """Rows in use, live and dead: the length of `scores`' answer."""
        return len(self._keys)

    def row_of(self, key: str) -> int | None:
        return self._rows.get(key)

    def key_of(self, row: int) -> str:
        """The key of a row ("" for a dead row)."""
        return self._keys[row]

    def neighbours(self, *, gap: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For every row, the live row just before it and just after it in time, when no more than
        `gap` (milliseconds) apart; -1 where there is none (and for dead rows)."""
        if self._neighbours is not None and self._neighbours[0] == gap:
            return self._neighbours[1], self._neighbours[2]
        if self._order is None:
            live = np.flatnonzero(self._alive[: self.rows])
            self._order = live[np.argsort(self._times[live], kind="stable")]
        order = self._order
        before = np.full(self.rows, -1, dtype=np.int64)
        after = np.full(self.rows, -1, dtype=np.int64)
        if order.shape[0] > 1:
            close = np.diff(self._times[order]) <= gap
            before[order[1:][close]] = order[:-1][close]
            after[order[:-1][close]] = order[1:][close]
        self._neighbours = (gap, before, after)
        return before, after

    # -- serialization -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The live items' statistics (keys, times, term counts, vocabulary) as bytes, for the
        sealed snapshot only."""
        live = np.flatnonzero(self._alive[: self.rows])
        used = np.flatnonzero(np.asarray(self._df, dtype=np.int64) > 0)  # the terms live rows hold
        renumber = np.full(len(self._terms), -1, dtype=np.int32)
        renumber[used] = np.arange(used.shape[0], dtype=np.int32)
        names = list(self._terms)
        row_terms = [self._row_terms[row] for row in live.tolist()]
        row_counts = [self._row_counts[row] for row in live.tolist()]
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format=np.array([_FORMAT], dtype=np.int32),
            parameters=np.array([self.k1, self.b], dtype=np.float64),
            keys=_pack_strings([self._keys[row] for row in live.tolist()]),
            key_ends=_string_ends([self._keys[row] for row in live.tolist()]),
            vocabulary=_pack_strings([names[term] for term in used.tolist()]),
            vocabulary_ends=_string_ends([names[term] for term in used.tolist()]),
            times=self._times[live],
            lengths=self._lengths[live].astype(np.int32),
            term_ends=np.cumsum([terms.shape[0] for terms in row_terms], dtype=np.int64),
            terms=renumber[np.concatenate(row_terms)] if row_terms else np.empty(0, dtype=np.int32),
            counts=np.concatenate(row_counts) if row_counts else np.empty(0, dtype=np.int32),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LexicalIndex:
        """An index equal to the one `to_bytes` was called on (rows compacted)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                if int(arrays["format"][0]) != _FORMAT:
                    raise ValueError(f"lexical index format {int(arrays['format'][0])} is not {_FORMAT}")
                k1, b = (float(value) for value in arrays["parameters"])
                keys = _unpack_strings(arrays["keys"], arrays["key_ends"])
                vocabulary = _unpack_strings(arrays["vocabulary"], arrays["vocabulary_ends"])
                times, lengths = arrays["times"], arrays["lengths"]
                ends, terms, counts = arrays["term_ends"], arrays["terms"], arrays["counts"]
        # zipfile's own errors for a damaged archive: RuntimeError (a flag bit says "encrypted"),
        # NotImplementedError (an unknown compression method), BadZipFile.
        except (OSError, EOFError, KeyError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a lexical index: {exc}") from exc
        if not _consistent(
            len(keys), len(vocabulary), times=times, lengths=lengths, ends=ends, terms=terms, counts=counts
        ):
            raise ValueError("not a lexical index: its arrays disagree")
        if len(set(keys)) != len(keys):
            raise ValueError("not a lexical index: a key appears twice")
        index = cls(k1=k1, b=b)
        index._terms = {name: term for term, name in enumerate(vocabulary)}
        index._load(keys, terms=terms, counts=counts, ends=ends, lengths=lengths, times=times)
        return index

    # -- internals ---------------------------------------------------------------------------------

    def _term_id(self, token: str) -> int:
        term = self._terms.get(token)
        if term is None:
            term = len(self._postings)
            self._terms[token] = term
            self._postings.append(_Postings())
            self._df.append(0)
        return term

    def _append_row(
        self, key: str, terms: npt.NDArray[np.int32], counts: npt.NDArray[np.int32], length: int, time: float
    ) -> None:
        row = len(self._keys)
        if row == self._lengths.shape[0]:
            grow = max(64, row)
            self._lengths = np.concatenate([self._lengths, np.zeros(grow, dtype=np.float32)])
            self._times = np.concatenate([self._times, np.zeros(grow, dtype=np.float64)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, dtype=bool)])
        self._keys.append(key)
        self._rows[key] = row
        self._row_terms.append(terms)
        self._row_counts.append(counts)
        self._lengths[row] = length
        self._times[row] = time
        self._alive[row] = True
        self._total_length += length
        for term, count in zip(terms.tolist(), counts.tolist(), strict=True):
            self._postings[term].append(row, count)
            self._df[term] += 1
        self._order, self._neighbours = None, None

    def _load(
        self,
        keys: list[str],
        *,
        terms: npt.NDArray[np.int32],
        counts: npt.NDArray[np.int32],
        ends: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int32],
        times: npt.NDArray[np.float64],
    ) -> None:
        """Replaces every row with these (live) rows at once: the postings are built by sorting,
        not by appending row after row."""
        rows = len(keys)
        vocabulary = len(self._terms)
        capacity = max(64, rows)
        self._keys = list(keys)
        self._rows = {key: row for row, key in enumerate(keys)}
        starts = np.concatenate([np.zeros(1, dtype=np.int64), ends[:-1]]) if rows else np.zeros(0, dtype=np.int64)
        terms, counts = terms.astype(np.int32), counts.astype(np.int32)
        spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
        self._row_terms = [terms[start:end] for start, end in spans]
        self._row_counts = [counts[start:end] for start, end in spans]
        self._lengths = np.zeros(capacity, dtype=np.float32)
        self._lengths[:rows] = lengths
        self._times = np.zeros(capacity, dtype=np.float64)
        self._times[:rows] = times
        self._alive = np.zeros(capacity, dtype=bool)
        self._alive[:rows] = True
        self._total_length = int(np.sum(lengths, dtype=np.int64))
        row_of_entry = np.repeat(np.arange(rows, dtype=np.int32), (ends - starts).astype(np.int64))
        # By term, rows ascending within a term. numpy sorts 16-bit integers stably by radix, several
        # times faster than its merge sort of wider ones: most owners' vocabularies fit.
        order = np.argsort(terms.astype(np.uint16) if vocabulary <= 1 << 16 else terms, kind="stable")
        frequencies = np.bincount(terms, minlength=vocabulary)
        bounds = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(frequencies, dtype=np.int64)]).tolist()
        entry_rows, entry_counts = row_of_entry[order], counts[order].astype(np.float32)
        self._postings = [
            _Postings(
                entry_rows[bounds[term] : bounds[term + 1]].copy(), entry_counts[bounds[term] : bounds[term + 1]].copy()
            )
            if bounds[term + 1] > bounds[term]
            else _Postings()
            for term in range(vocabulary)
        ]
        self._df = frequencies.tolist()
        self._order, self._neighbours = None, None

    def _idf(self, term: int) -> float:
        df = self._df[term]
        return math.log(1.0 + (len(self._rows) - df + 0.5) / (df + 0.5))

    def _scores(self, terms: Sequence[int]) -> npt.NDArray[np.float32]:
        rows = self.rows
        total = np.zeros(rows, dtype=np.float32)
        if not terms or not self._rows:
            return total
        average = self._total_length / len(self._rows) or 1.0
        norms = self.k1 * (1.0 - self.b + self.b * self._lengths[:rows] / average)
        for term, repeats in Counter(terms).items():
            postings = self._postings[term]
            where = postings.rows[: postings.size]
            tf = postings.counts[: postings.size]
            weight = (self._idf(term) * repeats * (self.k1 + 1.0)) * tf / (tf + norms[where])
            total[where] += weight  # a row appears once per term's postings
        total[~self._alive[:rows]] = 0.0
        return total

    def _compact(self) -> None:
        live = np.flatnonzero(self._alive[: self.rows]).tolist()
        terms = [self._row_terms[row] for row in live]
        self._load(
            [self._keys[row] for row in live],
            terms=np.concatenate(terms) if terms else np.empty(0, dtype=np.int32),
            counts=np.concatenate([self._row_counts[row] for row in live]) if live else np.empty(0, dtype=np.int32),
            ends=np.cumsum([row_terms.shape[0] for row_terms in terms], dtype=np.int64),
            lengths=self._lengths[live].astype(np.int32),
            times=self._times[live],
        )


def _consistent(
    rows: int,
    vocabulary: int,
    *,
    times: npt.NDArray[np.float64],
    lengths: npt.NDArray[np.int32],
    ends: npt.NDArray[np.int64],
    terms: npt.NDArray[np.int32],
    counts: npt.NDArray[np.int32],
) -> bool:
    if not (rows == times.shape[0] == lengths.shape[0] == ends.shape[0]) or terms.shape != counts.shape:
        return False
    if rows and (int(ends[-1]) != terms.shape[0] or bool(np.any(np.diff(ends) < 0)) or int(ends[0]) < 0):
        return False
    if not rows and terms.shape[0]:
        return False
    in_vocabulary = bool(np.all((terms >= 0) & (terms < vocabulary)))
    return (
        in_vocabulary and bool(np.all(counts > 0)) and bool(np.all(lengths >= 0)) and bool(np.all(np.isfinite(times)))
    )


def _pack_strings(values: Sequence[str]) -> npt.NDArray[np.uint8]:
    return np.frombuffer("".join(values).encode("utf-8"), dtype=np.uint8)


def _string_ends(values: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.cumsum([len(value.encode("utf-8")) for value in values], dtype=np.int64)


def _unpack_strings(packed: npt.NDArray[np.uint8], ends: npt.NDArray[np.int64]) -> list[str]:
    data = packed.tobytes()
    starts = [0, *ends.tolist()[:-1]]
    return [data[start:end].decode("utf-8") for start, end in zip(starts, ends.tolist(), strict=True)]
