"""A batch's word pieces: the run-time half of the static vectors shared by the vector layers.

Both readings of the vectors (their mean, :mod:`classifiers.embed`, and the phrase filters,
:mod:`classifiers.conv`) start from the same thing: each document's words split into WordPiece
pieces and looked up as rows of the vector table in the pipeline's vocabulary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import numpy as np
from spacy.attrs import ORTH
from spacy.tokens import Doc
from thinc.api import Model

from classifiers.bow import token_ids
from classifiers.vectors import PieceLookup, table_keys

T = TypeVar("T")
# word_pieces' result: (flat, count, inverse, doc_of, table).
Pieces = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# Words whose rows are kept: a stream of new handles and links must not grow the cache forever.
_WORDS_KEPT = 500_000


class SharedTable:
    """The vector table as the vector layers read it: its word lookup and a float32 copy.

    One holder serves every vector layer of a combined model (:func:`share_table`). Each layer
    keeping its own float32 copy of the float16 table cost 30 MB per layer, and each split the
    same batch's words into pieces again. thinc saves a layer's attrs with msgpack and skips any
    it cannot encode, so the holder is never written to the model folder and stays shared after
    the pipeline is loaded.
    """

    __slots__ = ("batch", "by_orth", "lookup", "table", "vectors")

    def __init__(self) -> None:
        """Start empty: the first batch fills it from the docs' vocabulary."""
        self.vectors: Any = None
        self.lookup: PieceLookup | None = None
        self.table: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        # Each word's table rows by its string id: the lookup runs once per word, not per batch.
        self.by_orth: dict[int, tuple[int, ...]] = {}
        # The last batch's pieces, keyed by its first token-id array (see word_pieces).
        self.batch: tuple[np.ndarray, Pieces] | None = None

    def rows(self, key: int, strings: Any) -> tuple[int, ...]:
        """The table rows of the word with string id ``key``, split once and kept.

        Both layers ask for the words they meet (the mean vectors' :class:`WordStore` and the
        filters' :func:`word_pieces`), so each new word is split into pieces once, not per layer.
        """
        found = self.by_orth.get(key)
        if found is None:
            if self.lookup is None:
                raise RuntimeError("piece_table() fills the table before words are looked up")
            if len(self.by_orth) >= _WORDS_KEPT:
                self.by_orth.clear()
            found = self.by_orth[key] = self.lookup.rows(strings[key])
        return found


def share_table(*layers: Model) -> None:
    """Give ``layers`` one :class:`SharedTable` (the vector layers of one combined model)."""
    holder = SharedTable()
    for layer in layers:
        layer.attrs["_table"] = holder


def piece_table(model: Model, docs: Sequence[Doc]) -> SharedTable:
    """The layer's :class:`SharedTable`, filled from the docs' vocabulary (once per vocabulary)."""
    vectors = docs[0].vocab.vectors
    holder = model.attrs.get("_table")
    if holder is None:
        # A layer built on its own (tests, other combinations) keeps a table of its own.
        holder = model.attrs["_table"] = SharedTable()
    if holder.vectors is vectors and holder.lookup is not None:
        return holder
    if vectors.shape[0] == 0:
        raise ValueError(
            "this pipeline has no vectors in its vocabulary; train it with a config that names "
            "[training] vectors (see classifiers/configs/)"
        )
    if vectors.shape[1] != model.get_dim("nI"):
        raise ValueError(
            f"the vocabulary's vectors have {vectors.shape[1]} dims, not {model.get_dim('nI')}"
        )
    holder.lookup = PieceLookup(table_keys(vectors), subwords=bool(model.attrs["subwords"]))
    holder.table = np.asarray(vectors.data, dtype=np.float32)
    holder.by_orth = {}
    holder.batch = None
    holder.vectors = vectors
    return holder


def word_pieces(model: Model, docs: Sequence[Doc]) -> Pieces:
    """A batch's distinct words and their word pieces, and where each word occurs (training).

    Returns:
        ``(flat, count, inverse, doc_of, table)``: the table rows of every distinct word's pieces,
        word after word, the number of pieces per distinct word, the distinct word of every
        token, the document of every token, and the float32 table.
    """
    holder = piece_table(model, docs)
    table = holder.table
    arrays = token_ids(docs, ORTH)
    # Within one forward pass of the combined model every layer gets the same id arrays
    # (bow.shared_token_ids), so the second layer reuses the first one's pieces. The cache holds
    # the array it was keyed on, so no other batch can have that object. Read once: another
    # thread classifying with the same model may replace it between a check and a second read.
    cached = holder.batch
    if arrays and cached is not None and cached[0] is arrays[0]:
        return cached[1]
    n_tokens = np.array([len(a) for a in arrays], dtype=np.int64)
    doc_of = np.repeat(np.arange(len(docs)), n_tokens)
    if not arrays or n_tokens.sum() == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, doc_of, table
    # Distinct words first: a batch repeats its words many times; the lookup runs once per word,
    # and the holder's cache keyed by the word's id skips even the string lookup for words seen
    # before (the dict read inline: this loop runs over every distinct word of every batch).
    unique, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    by_orth = holder.by_orth
    strings = docs[0].vocab.strings
    word_rows = []
    for key in unique.tolist():
        found = by_orth.get(key)
        word_rows.append(found if found is not None else holder.rows(key, strings))
    count = np.array([len(r) for r in word_rows], dtype=np.int64)
    flat = np.fromiter((i for r in word_rows for i in r), dtype=np.int64, count=int(count.sum()))
    result: Pieces = (flat, count, inverse.reshape(-1), doc_of, table)
    holder.batch = (arrays[0], result)
    return result


def no_backprop(d_output: Any) -> list[Any]:
    """The backprop of a prediction pass: the vector table is fixed, nothing upstream learns."""
    return []


def per_weights(model: Model, name: str, table: np.ndarray, W: Any, build: Callable[[], T]) -> T:
    """A prediction-time value derived from the table and the weights ``W``, built once.

    Kept in ``model.attrs[name]`` and rebuilt only when the weights' bytes or the table change
    (training moves the weights; ``use_params`` swaps in their averages).
    """
    key = hashlib.blake2b(np.ascontiguousarray(W).tobytes(), digest_size=16).digest()
    cached = model.attrs.get(name)
    if cached is None or cached[0] != key or cached[1] is not table:
        cached = (key, table, build())
        model.attrs[name] = cached
    return cast(T, cached[2])
