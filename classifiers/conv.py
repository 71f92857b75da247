"""Phrase detectors over the static piece vectors: a width-3 convolution, max-pooled.

The mean of a text's piece vectors (:mod:`classifiers.embed`) forgets word order: "not worth it"
and "worth it, not" pool to the same vector. This layer slides filters over each run of three
neighbouring word pieces, keeps each filter's strongest match in the text (max pooling) and maps
those to logits. A filter that fires on "can't log in" fires on "cant login" and "unable to sign
in" too, because it reads the pieces' vectors, not their identities.

The table is fixed, so when predicting it is projected through the filters once (``table @ W``:
one row of ``3 * filters`` numbers per piece) and each piece costs three row look-ups and
additions; no matrix product is left at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d

from classifiers.pieces import no_backprop, per_weights, word_pieces

WIDTH = 3  # pieces per window: the piece before, the piece, the piece after


def piece_sequence(model: Model, docs: Sequence[Doc]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every document's word pieces in reading order, as rows of the vector table.

    Returns:
        ``(rows, doc_of, table)``: the table row of each piece of each document, document after
        document; the document of each piece; and the float32 table.
    """
    flat, count, inverse, doc_of_token, table = word_pieces(model, docs)
    if not len(inverse):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, table
    word_start = np.cumsum(count) - count
    per_token = count[inverse]
    token_start = np.cumsum(per_token) - per_token
    # Piece j of token t sits at word_start[word of t] + j in ``flat`` and at token_start[t] + j in
    # the sequence: one arange and one offset per token, no Python loop over tokens.
    offset = np.repeat(word_start[inverse] - token_start, per_token)
    rows = flat[np.arange(int(per_token.sum())) + offset]
    return rows, np.repeat(doc_of_token, per_token), table


def _windows(A: np.ndarray, doc_of: np.ndarray, b: np.ndarray, filters: int) -> np.ndarray:
    """Filter responses from per-piece projections ``A`` (``[before | self | after]`` blocks).

    The response at piece i is ``A[i-1, before] + A[i, self] + A[i+1, after] + b``, where a
    neighbour in another document counts as zero padding.
    """
    Z = A[:, filters : 2 * filters] + b
    if len(A) > 1:
        same = doc_of[1:] == doc_of[:-1]
        Z[1:] += A[:-1, :filters] * same[:, None]
        Z[:-1] += A[1:, 2 * filters :] * same[:, None]
    return Z


def _max_pool(H: np.ndarray, doc_of: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Each document's maximum per filter (zero for a document without pieces).

    Returns:
        ``(pooled, docs)``: the pooled matrix and the documents that have pieces (ascending).
    """
    pooled = np.zeros((n_docs, H.shape[1]), dtype=H.dtype)
    if not len(H):
        return pooled, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, doc_of[1:] != doc_of[:-1]])
    docs = doc_of[starts]
    pooled[docs] = np.maximum.reduceat(H, starts, axis=0)
    return pooled, docs


def _projected(model: Model, table: np.ndarray) -> np.ndarray:
    """``scale * table @ W`` for the current filter weights, cached while they stay the same."""
    W = np.asarray(model.get_param("W"), dtype=np.float32)
    scale = float(model.attrs.get("scale", 1.0))
    return per_weights(
        model, "_projected", table, W, lambda: (scale * (table @ W)).astype(np.float32)
    )


def conv_forward(model: Model, docs: Sequence[Doc], is_train: bool) -> tuple[Floats2d, Callable]:
    """Logits from max-pooled width-3 filters over each document's piece vectors.

    ``logits = maxpool(relu(conv(V))) @ Wo.T + bo``; the filters ``W`` and output ``Wo`` learn,
    the vectors ``V`` do not.
    """
    filters = int(model.attrs["filters"])
    b = np.asarray(model.get_param("b"), dtype=np.float32)
    Wo = np.asarray(model.get_param("Wo"), dtype=np.float32)
    bo = np.asarray(model.get_param("bo"), dtype=np.float32)
    n = len(docs)
    rows, doc_of, table = piece_sequence(model, docs)
    if not is_train:
        A = _projected(model, table)[rows]
        H = np.maximum(_windows(A, doc_of, b, filters), 0.0)
        pooled, _ = _max_pool(H, doc_of, n)
        return cast(Floats2d, (pooled @ Wo.T + bo).astype("f")), no_backprop
    W = np.asarray(model.get_param("W"), dtype=np.float32)
    X = table[rows] * float(model.attrs.get("scale", 1.0))
    Z = _windows(X @ W, doc_of, b, filters)
    H = np.maximum(Z, 0.0)
    pooled, _ = _max_pool(H, doc_of, n)
    rate = float(model.attrs["dropout"])
    keep = (
        ((np.random.random(pooled.shape) >= rate) / (1.0 - rate)).astype(np.float32)
        if rate
        else None
    )
    dropped = pooled * keep if keep is not None else pooled
    out = dropped @ Wo.T + bo

    def backprop(dY: Floats2d) -> list[Any]:
        dY_ = np.asarray(dY, dtype=np.float32)
        model.inc_grad("Wo", cast(Floats2d, dY_.T @ dropped))
        model.inc_grad("bo", dY_.sum(axis=0))
        if not len(rows):
            return []
        d_pooled = dY_ @ Wo
        if keep is not None:
            d_pooled *= keep
        # The gradient reaches the piece that held each document's maximum (ties share it; a
        # tie at zero gets nothing from the ReLU anyway).
        winners = (H == pooled[doc_of]) & (Z > 0)
        dZ = np.where(winners, d_pooled[doc_of], 0.0).astype(np.float32)
        dA = np.zeros((len(dZ), WIDTH * filters), dtype=np.float32)
        dA[:, filters : 2 * filters] = dZ
        if len(dZ) > 1:
            same = (doc_of[1:] == doc_of[:-1])[:, None]
            dA[:-1, :filters] = dZ[1:] * same
            dA[1:, 2 * filters :] = dZ[:-1] * same
        model.inc_grad("W", cast(Floats2d, X.T @ dA))
        model.inc_grad("b", dZ.sum(axis=0))
        return []

    return cast(Floats2d, out.astype("f")), backprop


def _init_conv(model: Model, X: Any = None, Y: Any = None) -> None:
    if Y is not None:
        model.set_dim("nO", int(Y.shape[1]))
    n_out, n_in = model.get_dim("nO"), model.get_dim("nI")
    filters = int(model.attrs["filters"])
    # Glorot-scaled filters so that the responses start in the ReLU's working range; the output
    # layer starts at zero, so training starts from the other layers' logits and adds to them.
    # numpy's global generator: the training recipe seeds it (thinc's fix_random_seed).
    limit = np.sqrt(6.0 / (WIDTH * n_in + filters))
    model.set_param(
        "W",
        cast(
            Floats2d,
            np.random.uniform(-limit, limit, (n_in, WIDTH * filters)).astype(np.float32),
        ),
    )
    model.set_param("b", model.ops.alloc1f(filters))
    model.set_param("Wo", model.ops.alloc2f(n_out, filters))
    model.set_param("bo", model.ops.alloc1f(n_out))


def build_vectors_conv(
    dims: int,
    filters: int,
    subwords: bool = True,
    dropout: float = 0.0,
    scale: float = 1.0,
    nO: int | None = None,
) -> Model:
    """Docs in, logits out: max-pooled width-3 filters over the docs' static piece vectors.

    Args:
        dims: Width of the vector table.
        filters: Number of filters (each one a phrase detector).
        subwords: The table holds WordPiece pieces (MiniLM); False for whole words (GloVe).
        dropout: Dropout on the pooled filter responses while training.
        scale: Factor on the piece vectors.
        nO: Number of labels (inferred when the pipeline is initialised).
    """
    return Model(
        "vectors_conv",
        conv_forward,
        init=_init_conv,
        dims={"nO": nO, "nI": dims},
        params={"W": None, "b": None, "Wo": None, "bo": None},
        attrs={
            "subwords": subwords,
            "dropout": dropout,
            "scale": scale,
            "filters": filters,
        },
    )
