"""A fast regex tokenizer for the classifier, registered as ``triage_fast_tokenizer.v1``/``.v2``.

The bag-of-n-grams model needs words and punctuation runs, not spaCy's full English rules
(prefix/suffix/infix passes and exceptions); this split is about twice as fast and the model is
trained with it, so training and inference see the same tokens. It also applies
:func:`triage.normalize.normalize`, so the saved pipeline is self-contained: ``spacy.load`` on
the model folder and ``nlp.pipe`` give exactly the classifier's view of a text.

``v2`` adds word-stem features: every word of at least ``stem_min_length`` characters also yields a
token made of its first ``stem_length`` characters and ``~`` ("cancelled" -> ``cance~``). A bag of
exact words treats "cancelled", "cancellation" and "canceled" as unrelated; the shared stem lets
what the model learnt from one carry over to the others, which matters most for short, noisy posts.
The stem tokens are appended after the words, so the word bigrams stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import Doc
from spacy.vocab import Vocab

# Every triage pipeline is loaded after this module; importing the batched BOW architecture here
# registers it too (installed packages also find both through spaCy's entry points).
from classifiers import bow as _bow  # noqa: F401
from classifiers import embed as _embed  # noqa: F401
from triage.normalize import TOKEN as _TOKEN
from triage.normalize import normalize


class FastTokenizer:
    """Split text into word and punctuation tokens with one regular expression."""

    def __init__(self, vocab: Vocab, stem_length: int = 0, stem_min_length: int = 6) -> None:
        """Create the tokenizer over the pipeline's vocabulary.

        Args:
            vocab: The pipeline's vocabulary.
            stem_length: Characters kept in a stem token; 0 adds no stem tokens (``v1``).
            stem_min_length: Shortest word that gets a stem token.
        """
        self.vocab = vocab
        self.stem_length = stem_length
        self.stem_min_length = max(stem_min_length, stem_length + 1)

    def __call__(self, text: str) -> Doc:
        """Normalise and tokenize one text."""
        words = _TOKEN.findall(normalize(text))
        if self.stem_length:
            k, m = self.stem_length, self.stem_min_length
            words += [w[:k] + "~" for w in words if len(w) >= m]
        return Doc(self.vocab, words=words)

    def pipe(self, texts: Iterable[str], batch_size: int = 1000) -> Iterator[Doc]:
        """Tokenize a stream of texts."""
        for text in texts:
            yield self(text)

    # The tokenizer has no state, but spaCy serialises every pipeline part.
    def to_bytes(self, **kwargs: Any) -> bytes:
        """Serialise (nothing to keep)."""
        return b""

    def from_bytes(self, data: bytes, **kwargs: Any) -> FastTokenizer:
        """Deserialise (nothing to restore)."""
        return self

    def to_disk(self, path: str | Path, **kwargs: Any) -> None:
        """Write a marker file so the pipeline folder layout stays complete."""
        # Settings live in the pipeline config; the marker only documents them.
        Path(path).write_text(
            f"triage_fast_tokenizer stem_length={self.stem_length}\n", encoding="utf-8"
        )

    def from_disk(self, path: str | Path, **kwargs: Any) -> FastTokenizer:
        """Nothing to read."""
        return self


@spacy.registry.tokenizers("triage_fast_tokenizer.v1")
def create_fast_tokenizer() -> Any:
    """Registry entry used by ``[nlp.tokenizer]`` in configs of models without stem tokens."""

    def make(nlp: Any) -> FastTokenizer:
        return FastTokenizer(nlp.vocab)

    return make


@spacy.registry.tokenizers("triage_fast_tokenizer.v2")
def create_stem_tokenizer(stem_length: int = 5, stem_min_length: int = 6) -> Any:
    """Registry entry for the tokenizer with word-stem tokens (see the module docstring)."""

    def make(nlp: Any) -> FastTokenizer:
        return FastTokenizer(nlp.vocab, stem_length, stem_min_length)

    return make
