"""The bag of n-grams plus static sub-word embeddings: ``triage.TextCatBOWVectors.v1``.

The model adds two or three sets of logits and applies a sigmoid per label:

* the batched bag of word n-grams and stems (:mod:`classifiers.bow`), which is precise on the
  vocabulary it was trained on,
* a linear layer over the mean of the static vectors of the text's word pieces
  (:mod:`classifiers.vectors`), which carries over to words it never saw, and
* optionally (``conv_filters``), max-pooled phrase filters over the same vectors
  (:mod:`classifiers.conv`), which see the word order the mean forgets.

The vector table lives in the pipeline's vocabulary (``nlp.vocab.vectors``) and is saved with the
model. The pooling is done for a whole batch with NumPy, and when predicting the table is projected
to logits once, so each word piece costs a handful of additions: little on top of the BOW model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import spacy
from spacy.attrs import ORTH
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats1d, Floats2d

from classifiers.bow import build_batched_bow, shared_token_ids, token_ids
from classifiers.conv import build_vectors_conv
from classifiers.pieces import (
    SharedTable,
    no_backprop,
    per_weights,
    piece_table,
    share_table,
    word_pieces,
)


class WordStore:
    """Every word a predicting model has met, by token id: its piece count and projected sum.

    Classification streams meet the same words again and again; after the first batches almost
    every word is known, and a batch is looked up with one sorted search instead of a Python
    loop over its words. Only for prediction: the projected sums hold for one set of weights.
    """

    LIMIT = 500_000

    def __init__(self, shared: SharedTable, projected: np.ndarray) -> None:
        """Start empty for these weights (``projected`` = the table times the weights)."""
        # A new word is split into pieces through the shared cache, which the filters use too.
        self.shared = shared
        self.projected = projected
        self.keys = np.zeros(0, dtype=np.uint64)  # sorted token ids
        self.index = np.zeros(0, dtype=np.int64)  # word number of each sorted key
        self.pending: dict[int, int] = {}  # words added since the keys were last sorted
        self.count = np.zeros(1024, dtype=np.float64)
        self.sums = np.zeros((1024, projected.shape[1]), dtype=np.float64)
        self.size = 0

    def word_ids(self, unique: np.ndarray, strings: Any) -> np.ndarray:
        """Word numbers of a sorted array of distinct token ids, adding the new ones."""
        if self.size + len(unique) > self.LIMIT:
            self.__init__(self.shared, self.projected)  # type: ignore[misc]
        ids = np.full(len(unique), -1, dtype=np.int64)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, unique), len(self.keys) - 1)
            hit = self.keys[pos] == unique
            ids[hit] = self.index[pos[hit]]
        for i in np.flatnonzero(ids < 0).tolist():
            key = int(unique[i])
            word = self.pending.get(key)
            if word is None:
                word = self.pending[key] = self._add(self.shared.rows(key, strings))
            ids[i] = word
        if len(self.pending) > 4096:
            self._sort()
        return ids

    def _add(self, rows: tuple[int, ...]) -> int:
        if self.size == len(self.count):
            self.count = np.concatenate([self.count, np.zeros_like(self.count)])
            self.sums = np.concatenate([self.sums, np.zeros_like(self.sums)])
        self.count[self.size] = len(rows)
        if rows:
            self.sums[self.size] = self.projected[list(rows)].sum(axis=0)
        self.size += 1
        return self.size - 1

    def _sort(self) -> None:
        keys = np.concatenate([self.keys, np.fromiter(self.pending, dtype=np.uint64)])
        index = np.concatenate([self.index, np.fromiter(self.pending.values(), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        self.keys, self.index = keys[order], index[order]
        self.pending.clear()


def _predict(model: Model, docs: Sequence[Doc]) -> np.ndarray:
    """Prediction path of :func:`vectors_linear_forward` (see there)."""
    W = model.get_param("W")
    b = model.get_param("b")
    n = len(docs)
    shared = piece_table(model, docs)
    table = shared.table
    scale = float(model.attrs.get("scale", 1.0))
    store = per_weights(
        model,
        "_store",
        table,
        W,
        lambda: WordStore(
            shared, scale * (table.astype(np.float64) @ np.asarray(W, dtype=np.float64).T)
        ),
    )
    arrays = token_ids(docs, ORTH)
    n_tokens = np.array([len(a) for a in arrays], dtype=np.int64)
    out = np.zeros((n, W.shape[0]), dtype=np.float64)
    if n_tokens.sum():
        unique, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
        words = store.word_ids(unique, docs[0].vocab.strings)[inverse.reshape(-1)]
        doc_of = np.repeat(np.arange(n), n_tokens)
        pieces = np.bincount(doc_of, weights=store.count[words], minlength=n)
        for j in range(W.shape[0]):
            out[:, j] = np.bincount(doc_of, weights=store.sums[words, j], minlength=n)
        out /= np.maximum(pieces, 1.0)[:, None]
    return (out + b).astype("f")


def vectors_linear_forward(
    model: Model, docs: Sequence[Doc], is_train: bool
) -> tuple[Floats2d, Callable]:
    """Logits from the mean of each document's piece vectors: ``mean(V) @ W.T + b``.

    When predicting, the mean is linear, so the table is projected once (``table @ W.T``, one
    row of logits per piece) and only nO numbers per piece are summed, instead of ``dims``.
    """
    if not is_train:
        return cast(Floats2d, _predict(model, docs)), no_backprop
    W = model.get_param("W")
    b = model.get_param("b")
    n = len(docs)
    flat, count, inverse, doc_of, table = word_pieces(model, docs)
    pieces = np.bincount(doc_of, weights=count[inverse], minlength=n) if len(inverse) else None
    denominator = np.maximum(pieces, 1.0)[:, None] if pieces is not None else np.ones((n, 1))
    # Training: the pooled vectors themselves, for the gradient of W (small minibatches).
    X = np.zeros((n, table.shape[1]), dtype=np.float32)
    if len(inverse):
        u = len(count)
        word_vec = np.zeros((u, table.shape[1]), dtype=np.float32)
        has = count > 0
        if has.any():
            # ``flat`` is grouped by word, so each word's pieces are one segment.
            starts = (np.cumsum(count) - count)[has]
            word_vec[has] = np.add.reduceat(table[flat], starts, axis=0)
        per_doc = np.bincount(doc_of * u + inverse, minlength=n * u).reshape(n, u)
        X = (per_doc.astype(np.float32) @ word_vec) / denominator
        X *= float(model.attrs.get("scale", 1.0))
    rate = float(model.attrs["dropout"])
    if rate:
        X = X * (np.random.random(X.shape) >= rate) / (1.0 - rate)
    out = X @ W.T + b

    def backprop(dY: Floats2d) -> list[Any]:
        model.inc_grad("W", cast(Floats2d, (np.asarray(dY).T @ X).astype("f")))
        model.inc_grad("b", cast(Floats1d, np.asarray(dY).sum(axis=0).astype("f")))
        return []

    return cast(Floats2d, out.astype("f")), backprop


def _init_vectors_linear(model: Model, X: Any = None, Y: Any = None) -> None:
    if Y is not None:
        model.set_dim("nO", int(Y.shape[1]))
    n_out, n_in = model.get_dim("nO"), model.get_dim("nI")
    # Zero weights: training starts from the BOW model and adds what the vectors explain.
    model.set_param("W", model.ops.alloc2f(n_out, n_in))
    model.set_param("b", model.ops.alloc1f(n_out))


def build_vectors_linear(
    dims: int,
    subwords: bool = True,
    dropout: float = 0.0,
    scale: float = 1.0,
    nO: int | None = None,
) -> Model:
    """Docs in, logits out: a linear layer over the mean of the docs' static piece vectors."""
    return Model(
        "vectors_linear",
        vectors_linear_forward,
        init=_init_vectors_linear,
        dims={"nO": nO, "nI": dims},
        params={"W": None, "b": None},
        attrs={"subwords": subwords, "dropout": dropout, "scale": scale},
    )


def _sum_sigmoid_forward(
    model: Model, docs: Sequence[Doc], is_train: bool
) -> tuple[Floats2d, Callable]:
    # Both layers read the same token ids: read them once for the batch.
    with shared_token_ids(docs, ORTH):
        outputs = [layer(docs, is_train) for layer in model.layers]
    logits = outputs[0][0]
    for y, _ in outputs[1:]:
        logits = logits + y
    # Clipped: a long text can pile up logits past what exp() takes; 40 is already 1 - 4e-18.
    probs = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits), -40.0, 40.0)))

    def backprop(dY: Floats2d) -> list[Any]:
        d_logits = dY * probs * (1.0 - probs)
        for _, callback in outputs:
            callback(d_logits)
        return []

    return cast(Floats2d, probs.astype("f")), backprop


def _sum_sigmoid_init(model: Model, X: Any = None, Y: Any = None) -> None:
    for layer in model.layers:
        layer.initialize(X=X, Y=Y)
    if Y is not None:
        model.set_dim("nO", int(Y.shape[1]))


def _sum_sigmoid(*layers: Model, nO: int | None = None) -> Model:
    """Docs in; a sigmoid over the sum of the layers' logits out (one probability per label).

    thinc's ``add`` and ``chain`` initialise inner layers without the labels or with the docs'
    "width"; this combinator hands both to every layer.
    """
    return Model(
        "sum_sigmoid",
        _sum_sigmoid_forward,
        init=_sum_sigmoid_init,
        layers=list(layers),
        dims={"nO": nO},
    )


@spacy.registry.architectures("triage.TextCatBOWVectors.v1")
def build_bow_vectors(
    exclusive_classes: bool,
    ngram_size: int,
    dims: int,
    length: int = 262144,
    dropout: float = 0.0,
    subwords: bool = True,
    use_bow: bool = True,
    scale: float = 1.0,
    bow_normalize: float = 0.0,
    conv_filters: int = 0,
    conv_dropout: float = 0.0,
    nO: int | None = None,
) -> Model:
    """Sum of the BOW logits, a linear layer over mean static vectors (and phrase filters); sigmoid.

    Args:
        exclusive_classes: Must be False (multi-label, a sigmoid per label).
        ngram_size: Longest word n-gram of the BOW part.
        dims: Width of the vector table (checked against the vocabulary's table when it runs).
        length: Hash buckets of the BOW part.
        dropout: Dropout on the pooled vectors while training.
        subwords: The table holds WordPiece pieces (MiniLM); False for whole words (GloVe).
        use_bow: False leaves the vectors alone (an ablation: what do the vectors know?).
        scale: Factor on the mean vectors. With Adam every weight moves about the same step, so
            this sets how fast the vector part learns next to the n-grams.
        bow_normalize: L2 norm of each document's n-gram counts (0: raw counts).
        conv_filters: Width-3 phrase filters over the piece vectors, max-pooled, as a third set
            of logits (:mod:`classifiers.conv`); 0 leaves them out.
        conv_dropout: Dropout on the pooled filter responses while training.
        nO: Number of labels (inferred when the pipeline is initialised).
    """
    if exclusive_classes:
        raise ValueError("triage.TextCatBOWVectors.v1 is multi-label only")
    bow = build_batched_bow(
        exclusive_classes=False,
        ngram_size=ngram_size,
        no_output_layer=True,
        length=length,
        nO=nO,
        normalize=bow_normalize,
    )
    # Not wrapped in with_cpu as the BOW part is: thinc's with_cpu always runs the training path.
    vec = build_vectors_linear(dims, subwords, dropout, scale, nO)
    layers = [bow, vec] if use_bow else [vec]
    if conv_filters:
        conv = build_vectors_conv(dims, conv_filters, subwords, conv_dropout, scale, nO)
        layers.append(conv)
        share_table(vec, conv)
    model = _sum_sigmoid(*layers, nO=nO)
    if use_bow:
        model.set_ref("output_layer", bow.get_ref("output_layer"))
    model.attrs["multi_label"] = True
    return model
