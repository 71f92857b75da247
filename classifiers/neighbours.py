"""Which rows of a file read alike: the neighbourhoods that stand in for sources it does not name.

Adapting to a stream's label mix (:mod:`classifiers.adapt`) needs to know which rows came from
one source. A file handed to ``triage classify`` without a ``source`` column often holds several:
an export of tweets, app reviews and support mail together. Adapted as one stream, its mix is the
average of theirs and fits none (README, "Adapting row by row"). Rows of one source
share vocabulary (handles, product names, the way a channel writes), so each row's mix is
estimated instead from the rows that read most like it.

Rows are compared on TF-IDF weights of words, word pairs, four-letter word pieces and a few marks of
how a channel writes (length, an opening handle, links, shouting), reduced to :data:`COMPONENTS`
dimensions by a randomised truncated SVD (Halko, Martinsson and Tropp, 2011) and normalised to
unit length.
Everything is NumPy: the term matrix is kept as CSR arrays, never dense. A file of more than
:data:`REFERENCE` rows is compared against a fixed sample of that many: each sampled row's mix is
estimated from its nearest sampled rows, and every other row takes the mix of the sampled row it
reads most like, which keeps the cost linear in the file's length.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, pairwise, repeat

import numpy as np

NEIGHBOURS = 30
"""Rows each row's label mix is estimated on, itself included (a stream still needs the model's
``min_items`` rows before it is adapted at all). Chosen on the shared train files written as one
label-balanced file (seeds 1-6): 30 gave 0.868 macro-F1, 30.1% flagged and 96.5% right when not
flagged, against 0.860, 32.7% and 96.4% for 50. 15-25 flagged 1-4 points fewer still but were
less right (25: 0.869, 29.0%, 96.3%); 100 and more scored lower and flagged more (README,
"Adapting row by row")."""
COMPONENTS = 20
"""Dimensions rows are compared in. Fewer than the usual 50-100 on purpose: the leading
directions are what sources differ by (vocabulary, register); the rest is topic within a source.
Chosen on the shared train files pooled into one file (README, "Adapting row by row")."""
MAX_TERMS = 10_000
"""The most frequent terms kept (words, @handles, #tags, word pairs, word pieces and style marks
seen in two rows or more)."""
REFERENCE = 5_000
"""Rows compared exactly; a longer file is compared against a seeded sample of this many."""
READ_CHARS = 2_000
"""Only a text's first characters are compared: a source shows in how its texts open, and a long
email or pasted log would otherwise cost time in proportion to its length."""
_WORD = re.compile(r"[#@]?\w+")
_CHUNK = 2_048


@dataclass(slots=True)
class _Terms:
    """A CSR term matrix: row ``i``'s terms are ``indices[indptr[i]:indptr[i+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    width: int

    def dot(self, dense: np.ndarray) -> np.ndarray:
        """This matrix times ``dense`` (width x k)."""
        out = np.zeros((len(self.indptr) - 1, dense.shape[1]), dtype=np.float64)
        lengths = np.diff(self.indptr)
        filled = np.flatnonzero(lengths)
        if len(filled):
            # Column by column, so the temporary is one float per entry, not k. reduceat sums
            # each row's slice; an empty row would get its neighbour's first entry instead of
            # zero, hence only the filled rows.
            for j in range(dense.shape[1]):
                products = self.data * dense[self.indices, j]
                out[filled, j] = np.add.reduceat(products, self.indptr[filled])
        return out

    def tdot(self, dense: np.ndarray) -> np.ndarray:
        """The transpose of this matrix times ``dense`` (rows x k)."""
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        out = np.zeros((self.width, dense.shape[1]), dtype=np.float64)
        for j in range(dense.shape[1]):
            out[:, j] = np.bincount(
                self.indices, weights=self.data * dense[rows, j], minlength=self.width
            )
        return out


@lru_cache(maxsize=200_000)
def _pieces(word: str) -> tuple[str, ...]:
    # Four-letter pieces of the word with its edges marked: a source's spellings, typos and
    # product names share pieces even where the whole words differ.
    marked = f"<{word}>"
    return tuple(marked[i : i + 4] for i in range(max(1, len(marked) - 3)))


def _style(text: str, words: int) -> list[str]:
    # How a channel writes, whatever it writes about: tweets open with a handle, reviews run
    # long, comment spam shouts and links. Pseudo-words, so they weigh in like any other term.
    marks = [f"~len{min(8, words.bit_length())}"]
    checks = (
        ("~at", text.lstrip().startswith("@")),
        ("~link", "http" in text or "www." in text),
        ("~bang", "!" in text),
        ("~ask", "?" in text),
        ("~caps", text.upper() == text and text.lower() != text),
        ("~lower", text.lower() == text),
        ("~nonascii", not text.isascii()),
        ("~stop", "." in text),
    )
    return marks + [mark for mark, present in checks if present]


def _terms(text: str) -> list[str]:
    """The row's terms, repeated as often as they occur."""
    text = text[:READ_CHARS]
    words = _WORD.findall(text.lower())
    terms = words + [f"{a} {b}" for a, b in pairwise(words)]
    terms.extend(chain.from_iterable(map(_pieces, words)))
    terms.extend(_style(text, len(words)))
    return terms


def _matrix(rows: Sequence[list[str]], index: dict[str, int], idf: np.ndarray) -> _Terms:
    """The rows' TF-IDF weights over ``index``'s terms, each row of unit length."""
    width = len(index)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    # One flat pass of dictionary lookups, then NumPy: a Python loop per term is the slow part.
    flat = np.fromiter(
        map(index.get, chain.from_iterable(rows), repeat(-1)), dtype=np.int64, count=lengths.sum()
    )
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    known = flat >= 0
    keys, tf = np.unique(owner[known] * width + flat[known], return_counts=True)
    cols = keys % max(width, 1)
    starts = np.searchsorted(keys // max(width, 1), np.arange(len(rows) + 1))
    # Sub-linear term frequency: a word said five times is not five times the topic.
    weights = (1.0 + np.log(tf.astype(np.float64))) * idf[cols]
    sizes = np.diff(starts)
    filled = np.flatnonzero(sizes)
    if len(filled):
        norms = np.sqrt(np.add.reduceat(weights**2, starts[filled]))
        weights /= np.repeat(norms, sizes[filled])
    return _Terms(starts, cols, weights, width)


def _directions(matrix: _Terms, k: int, seed: int, power: int = 3) -> np.ndarray:
    """The top ``k`` right singular vectors (k x width), by randomised range finding."""
    rng = np.random.default_rng(seed)
    probe = matrix.dot(rng.standard_normal((matrix.width, k + 10)))
    for _ in range(power):
        # Power iterations sharpen the spectrum; re-orthonormalising keeps them stable.
        probe, _ = np.linalg.qr(probe)
        probe = matrix.dot(matrix.tdot(probe))
    basis, _ = np.linalg.qr(probe)
    small = matrix.tdot(basis).T  # basis.T @ matrix, (k + 10) x width
    _, _, vt = np.linalg.svd(small, full_matrices=False)
    return np.asarray(vt[:k])


def text_features(
    texts: Sequence[str], reference: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """Unit-length vectors on which rows of one source lie close together.

    Args:
        texts: The file's texts.
        reference: Indices of the rows the vocabulary and directions are fitted on (default:
            every row).
        seed: Seeds the random projection, so a file always gets the same vectors.

    Returns:
        An (n, d) array with d <= :data:`COMPONENTS`; a row with no shared term is all zeros.
    """
    fit = np.arange(len(texts)) if reference is None else reference
    fitted = [_terms(texts[int(i)]) for i in fit]
    df: Counter[str] = Counter(chain.from_iterable(map(set, fitted)))
    kept = sorted((t for t, c in df.items() if c >= 2), key=lambda t: (-df[t], t))[:MAX_TERMS]
    k = min(COMPONENTS, len(kept), len(fit) - 1)
    if k < 1:
        return np.zeros((len(texts), 0))
    index = {t: j for j, t in enumerate(kept)}
    idf = np.log((1 + len(fit)) / (1 + np.array([df[t] for t in kept], dtype=np.float64))) + 1
    fitted_matrix = _matrix(fitted, index, idf)
    del fitted
    directions = _directions(fitted_matrix, k, seed).T
    if np.array_equal(fit, np.arange(len(texts))):
        # Every row was fitted on, in order (a file of REFERENCE rows or fewer): project the
        # matrix already built rather than reading each text a second time.
        out = fitted_matrix.dot(directions)
    else:
        out = np.zeros((len(texts), k))
        for start in range(0, len(texts), _CHUNK):
            # Chunk by chunk: the terms of a long file would outweigh the vectors many times.
            part = [_terms(t) for t in texts[start : start + _CHUNK]]
            out[start : start + _CHUNK] = _matrix(part, index, idf).dot(directions)
    # The pieces of a file's words are worth keeping while it is read, not after.
    _pieces.cache_clear()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def nearest(queries: np.ndarray, candidates: np.ndarray, m: int) -> np.ndarray:
    """For each query row, the positions of its ``m`` most similar candidate rows (cosine).

    Args:
        queries: Unit-length (n, d) vectors (:func:`text_features`).
        candidates: Unit-length (c, d) vectors of the rows to choose from.
        m: How many neighbours (at most ``c``).

    Returns:
        An (n, m) array of positions into ``candidates``, in no particular order.
    """
    m = min(m, len(candidates))
    out = np.empty((len(queries), m), dtype=np.int64)
    if m == len(candidates):
        out[:] = np.arange(m)
        return out
    # A few hundred rows at a time: each holds a similarity row per candidate (5,000 floats).
    for start in range(0, len(queries), 256):
        sim = queries[start : start + 256] @ candidates.T
        if m == 1:
            out[start : start + 256, 0] = sim.argmax(axis=1)
        else:
            out[start : start + 256] = np.argpartition(-sim, m - 1, axis=1)[:, :m]
    return out


def reference_rows(n: int, seed: int = 0) -> np.ndarray:
    """The rows compared exactly: all of a short file, a sorted seeded sample of a long one."""
    if n <= REFERENCE:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=REFERENCE, replace=False))
