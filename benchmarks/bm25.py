"""BM25 Okapi over a small corpus, in numpy: the lexical baseline of `make bench-quality`.

Tokens are lowercase words (`\\w+`). A term's inverse document frequency is Lucene's
log(1 + (N - df + 0.5) / (df + 0.5)), which stays positive for a term in more than half the documents
(the original Okapi form goes negative there and would rank a document lower for matching it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25:
    """Scores every document of `documents` for a query; built once, queried many times."""

    def __init__(self, documents: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        tokenized = [tokenize(document) for document in documents]
        self.size = len(tokenized)
        lengths = np.array([len(tokens) for tokens in tokenized], dtype=np.float64)
        average = float(lengths.mean()) if self.size and lengths.mean() > 0 else 1.0
        # The part of each term weight that depends on the document alone: k1 * (1 - b + b * |d| / avgdl).
        norms = k1 * (1.0 - b + b * lengths / average)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for row, tokens in enumerate(tokenized):
            for term, count in Counter(tokens).items():
                documents_of, counts = postings.setdefault(term, ([], []))
                documents_of.append(row)
                counts.append(count)
        # Per term: the documents that hold it and their whole contribution to a query that has it.
        self._postings: dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]] = {}
        for term, (rows, counts) in postings.items():
            where = np.array(rows, dtype=np.intp)
            tf = np.array(counts, dtype=np.float64)
            df = len(rows)
            idf = np.log(1.0 + (self.size - df + 0.5) / (df + 0.5))
            self._postings[term] = (where, idf * tf * (k1 + 1.0) / (tf + norms[where]))

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """One score per document, in the order given; a query term repeated counts again."""
        total = np.zeros(self.size, dtype=np.float64)
        for term in tokenize(query):
            posting = self._postings.get(term)
            if posting is not None:
                where, weights = posting
                total[where] += weights
        return total

    def rank(self, query: str) -> list[int]:
        """Every document's index, best first (ties in document order)."""
        return [int(i) for i in np.argsort(-self.scores(query), kind="stable")]
