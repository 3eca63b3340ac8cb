"""BM25 over words (Latin scripts) and character uni/bigrams (Chinese, Japanese, Korean)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
# Words that carry no meaning for matching a question (English only; CJK bigrams rarely need it).
STOP_WORDS = frozenset(
    "a an the i me my we our you your it its is are was were be been am do does did can could "
    "would should will shall to of in on at for with by from and or but if so this that these those "
    "there here what how why when where which who please hi hello hey thanks thank".split()
)


_PUNCTUATION = re.compile(r"[^\w]+", re.UNICODE)


def plain_text(text: str) -> str:
    """Lower case, punctuation and runs of spaces as one space: "Where is my order?" and
    "where is my order" are the same text typed two ways."""
    return _PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def is_cjk(text: str) -> bool:
    """Written mostly in Chinese, Japanese or Korean (a third of its characters or more)."""
    return sum(len(run) for run in _CJK.findall(text)) * 3 > len(text.strip())


def tokenize(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    for run in _CJK.findall(text):
        tokens.extend(run)
        tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
    latin = _CJK.sub(" ", text)
    tokens.extend(w for w in _WORD.findall(latin) if w not in STOP_WORDS)
    return tokens


DENSE_MAX_CELLS = 2_000_000  # terms x documents kept as a dense array too (8 MB of float32)


class BM25:
    """Okapi BM25 over a fixed set of documents (phrasings)."""

    def __init__(self, documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        tokenized = [Counter(tokenize(doc)) for doc in documents]
        self.vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[float] = []
        lengths = np.array([sum(c.values()) for c in tokenized], dtype=np.float32)
        for row, counts in enumerate(tokenized):
            for term, tf in counts.items():
                rows.append(row)
                cols.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                tfs.append(tf)
        n = max(len(documents), 1)
        df = np.bincount(np.array(cols, dtype=np.int64), minlength=len(self.vocabulary))
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        self.oov_idf = float(math.log1p((n + 0.5) / 0.5))
        avg = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        tf = np.array(tfs, dtype=np.float32)
        norm = k1 * (1 - b + b * lengths[np.array(rows, dtype=np.int64)] / avg) if rows else tf
        weights = self.idf[np.array(cols, dtype=np.int64)] * tf * (k1 + 1) / (tf + norm) if rows else tf
        shape = (len(documents), len(self.vocabulary))
        # Terms x documents, so a query is a few row lookups summed.
        self.matrix = sparse.csr_matrix((weights, (cols, rows)), shape=shape[::-1], dtype=np.float32)
        # A small knowledge base also keeps it dense: summing a few dense rows costs a few
        # microseconds, slicing the sparse matrix a few hundred.
        cells = shape[0] * shape[1]
        self.dense = self.matrix.toarray() if cells <= DENSE_MAX_CELLS else None

    def scores(self, query: str) -> tuple[np.ndarray, float]:
        """BM25 score of every document, and the query's total idf (a normaliser).

        A document holding every query term once, at average length, scores about the
        normaliser; unknown query words add to the normaliser but to no score.
        """
        terms = set(tokenize(query))
        known = [self.vocabulary[t] for t in terms if t in self.vocabulary]
        total_idf = float(self.idf[known].sum()) + self.oov_idf * (len(terms) - len(known))
        if not known:
            return np.zeros(self.matrix.shape[1], dtype=np.float32), total_idf
        if self.dense is not None:
            return self.dense[known].sum(axis=0, dtype=np.float32), total_idf
        # Each known term's postings added in: scipy's row slicing and sum cost about ten
        # times more in fixed overhead than this does in arithmetic.
        scores = np.zeros(self.matrix.shape[1], dtype=np.float32)
        indptr, documents, weights = self.matrix.indptr, self.matrix.indices, self.matrix.data
        for term in known:  # a term's documents are distinct, so += adds each once
            scores[documents[indptr[term] : indptr[term + 1]]] += weights[indptr[term] : indptr[term + 1]]
        return scores, total_idf

    def scores_many(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``scores`` for several queries at once: (queries x documents, total idf per query)."""
        rows: list[int] = []
        cols: list[int] = []
        totals = np.zeros(len(queries), dtype=np.float32)
        for row, query in enumerate(queries):
            terms = set(tokenize(query))
            known = [self.vocabulary[t] for t in terms if t in self.vocabulary]
            totals[row] = float(self.idf[known].sum()) + self.oov_idf * (len(terms) - len(known))
            rows.extend([row] * len(known))
            cols.extend(known)
        indicator = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(queries), len(self.vocabulary))
        )
        return np.asarray((indicator @ self.matrix).todense(), dtype=np.float32), totals
