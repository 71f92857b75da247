"""A fast regex tokenizer for the classifier, registered as ``triage_fast_tokenizer.v1``.

The bag-of-n-grams model needs words and punctuation runs, not spaCy's full English rules
(prefix/suffix/infix passes and exceptions); this split is about twice as fast and the model is
trained with it, so training and inference see the same tokens. It also applies
:func:`classifiers.normalize.normalize`, so the saved pipeline is self-contained: ``spacy.load`` on
the model folder and ``nlp.pipe`` give exactly the classifier's view of a text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import spacy
from spacy.tokens import Doc
from spacy.vocab import Vocab

from classifiers.normalize import normalize

# Words (letters, digits, underscores, apostrophes inside words), else runs of one symbol kind.
_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]+")


class FastTokenizer:
    """Split text into word and punctuation tokens with one regular expression."""

    def __init__(self, vocab: Vocab) -> None:
        """Create the tokenizer over the pipeline's vocabulary."""
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        """Normalise and tokenize one text."""
        return Doc(self.vocab, words=_TOKEN.findall(normalize(text)))

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
        Path(path).write_text("triage_fast_tokenizer.v1\n", encoding="utf-8")

    def from_disk(self, path: str | Path, **kwargs: Any) -> FastTokenizer:
        """Nothing to read."""
        return self


@spacy.registry.tokenizers("triage_fast_tokenizer.v1")
def create_fast_tokenizer() -> Any:
    """Registry entry used by ``[nlp.tokenizer]`` in the configs."""

    def make(nlp: Any) -> FastTokenizer:
        return FastTokenizer(nlp.vocab)

    return make
