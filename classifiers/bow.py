"""spaCy's bag-of-n-grams text classifier with n-gram extraction done per batch, not per text.

``spacy.TextCatBOW.v3`` extracts each document's n-grams with its own ``numpy.unique`` call;
for tweets of ten words that fixed per-call cost is about a third of the whole classification
time. ``triage.TextCatBOW.v1`` builds exactly the same model (same layers, same weights file) and
replaces only that step with one that hashes, sorts and counts the n-grams of a whole batch at
once. Its output is identical to spaCy's (keys sorted within each document, counts, lengths), so
a model trained with either architecture gives the same scores with both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import spacy
from spacy.ml.models.textcat import build_bow_text_classifier_v3
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Ints1d

_Keys = tuple[np.ndarray, np.ndarray, np.ndarray]

# The token ids of the batch being classified in this thread, when a combined model already
# read them (``shared_token_ids``): doc.to_array is a fixed cost per document, worth paying once.
_SHARED = threading.local()


def token_ids(docs: Sequence[Doc], attr: int) -> list[np.ndarray]:
    """Each doc's token ids (``doc.to_array(attr)``), read once per batch for all layers."""
    shared = getattr(_SHARED, "entry", None)
    if shared is not None and docs and shared[0] is docs[0] and shared[1:3] == (len(docs), attr):
        return list(shared[3])
    return [np.asarray(doc.to_array(attr), dtype=np.uint64).reshape(-1) for doc in docs]


class shared_token_ids:
    """While active, :func:`token_ids` returns these ids for this batch instead of re-reading."""

    def __init__(self, docs: Sequence[Doc], attr: int) -> None:
        """Read the batch's ids once."""
        self.entry = (docs[0], len(docs), attr, token_ids(docs, attr)) if docs else None

    def __enter__(self) -> list[np.ndarray]:
        _SHARED.entry = self.entry
        return self.entry[3] if self.entry else []

    def __exit__(self, *exc: object) -> None:
        _SHARED.entry = None


def batch_ngrams(model: Model, docs: Sequence[Doc], is_train: bool) -> tuple[_Keys, Callable]:
    """Forward pass of the n-gram extractor over a whole batch.

    Returns:
        ``(keys, counts, lengths)`` as spaCy's ``extract_ngrams`` returns them: for every document
        its distinct n-gram hashes in ascending order, how often each occurs (float32), and how
        many distinct n-grams each document has (int32); and a no-op backprop.
    """
    ops = model.ops
    attr = model.attrs["attr"]
    size = int(model.attrs["ngram_size"])
    arrays = token_ids(docs, attr)
    n_tokens = np.array([len(a) for a in arrays], dtype=np.int64)
    if not arrays or n_tokens.sum() == 0:
        empty = (
            np.zeros((0,), dtype=np.uint64),
            np.zeros((0,), dtype="f"),
            np.zeros((len(arrays),), dtype="int32"),
        )
        return empty, _no_backprop
    unigrams = np.ascontiguousarray(np.concatenate(arrays))
    doc_of = np.repeat(np.arange(len(arrays)), n_tokens)
    ends = np.cumsum(n_tokens)
    keys = [unigrams]
    owners = [doc_of]
    for n in range(2, size + 1):
        grams = np.asarray(ops.ngrams(n, cast(Ints1d, unigrams)))
        if not len(grams):
            continue
        # An n-gram starting at j covers tokens j..j+n-1; those that run into the next
        # document do not exist in spaCy's per-document extraction.
        starts_in = doc_of[: len(grams)]
        inside = np.arange(len(grams)) + n - 1 < ends[starts_in]
        keys.append(grams[inside])
        owners.append(starts_in[inside])
    all_keys = np.concatenate(keys)
    all_owners = np.concatenate(owners)
    order = np.lexsort((all_keys, all_owners))
    all_keys = all_keys[order]
    all_owners = all_owners[order]
    new = np.ones(len(all_keys), dtype=bool)
    new[1:] = (all_keys[1:] != all_keys[:-1]) | (all_owners[1:] != all_owners[:-1])
    firsts = np.flatnonzero(new)
    counts = np.diff(np.append(firsts, len(all_keys))).astype("f")
    lengths = np.bincount(all_owners[firsts], minlength=len(arrays)).astype("int32")
    norm = float(model.attrs.get("normalize", 0.0))
    if norm:
        # Length-normalised counts (as TF-IDF's L2 norm, times a constant): a long review then
        # scores like a short post with the same mix of words instead of piling up evidence.
        doc_of_key = all_owners[firsts]
        sq = np.bincount(doc_of_key, weights=counts.astype(np.float64) ** 2, minlength=len(arrays))
        counts = (counts * norm / np.sqrt(np.maximum(sq, 1.0))[doc_of_key]).astype("f")
    return (all_keys[firsts], counts, lengths), _no_backprop


def _no_backprop(d_output: Any) -> list[Any]:
    # Hashing is not differentiable; spaCy's extractor returns nothing either.
    return []


@spacy.registry.architectures("triage.TextCatBOW.v1")
def build_batched_bow(
    exclusive_classes: bool,
    ngram_size: int,
    no_output_layer: bool,
    length: int = 262144,
    nO: int | None = None,
    normalize: float = 0.0,
) -> Model:
    """``spacy.TextCatBOW.v3`` with the batched n-gram extractor (see the module docstring).

    ``normalize`` > 0 scales each document's n-gram counts to that L2 norm (0: raw counts, as
    spaCy's model).
    """
    model = build_bow_text_classifier_v3(
        exclusive_classes=exclusive_classes,
        ngram_size=ngram_size,
        no_output_layer=no_output_layer,
        length=length,
        nO=nO,
    )
    extractors = [node for node in model.walk() if node.name == "extract_ngrams"]
    if len(extractors) != 1:
        raise RuntimeError("unexpected spaCy BOW model layout: cannot find its n-gram extractor")
    # thinc keeps a layer's forward function in ``_func``; swapping it keeps the layer's name,
    # attributes and place in the model, so weights saved by either architecture load in both.
    extractors[0]._func = batch_ngrams
    extractors[0].attrs["normalize"] = normalize
    return model
