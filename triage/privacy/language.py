"""Language of a mention, from a model that ships inside a wheel (no download at run time).

The model is py3langid's (BSD-3-Clause; a naive Bayes over byte n-grams, 140 languages, bundled
in the package as ``data/model.npz.xz``). It loads once per process, in about a second.

Public API::

    detect_language(text) -> LanguageGuess
    detect_languages(texts) -> list[LanguageGuess]          # batch, one guess per text, in order
    LanguageDetector(min_letters=4, min_confidence=0.2, languages=None).detect(...) / .detect_many(...)
    shared_detector(languages=None) -> LanguageDetector  # one per language tuple and process

A :class:`LanguageGuess` has ``language`` (an ISO 639-1 code such as ``en``, ``pt``, ``zh``; ISO
639-3 for languages without one; or ``"unknown"``), ``confidence`` (0-1) and ``reason``:
``None`` when decided, otherwise ``"too_short"`` (fewer letters than ``min_letters`` once links,
handles, hashtags, e-mail addresses, digits and emoji are removed), ``"low_confidence"`` (the
model's top probability is below ``min_confidence``) or ``"no_language"`` (the model says the text
carries no language). Tweets are short: "ok 👍" is honestly unknown, and callers should route
unknown like any language the classifier was not trained on (to review, with the reason).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

UNKNOWN = "unknown"

# Links, e-mail addresses, @handles, #hashtags and digits carry no language (or the wrong one:
# brand handles are English in every language); emoji and pictographs neither.
_NOISE = re.compile(
    r"https?://\S+|www\.\S+|\S+@\S+\.\S+|[@#][\w.]+|\d+"
    r"|[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF\uFE0F\u200D\u20E3]+"
)
# Scripts written without spaces, where two characters already make a word.
_DENSE_SCRIPT = re.compile(r"[\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uAC00-\uD7AF\u0E00-\u0E7F]")


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    """The detected language of one text; ``language`` is ``"unknown"`` when undecided."""

    language: str
    confidence: float
    reason: str | None = None

    @property
    def known(self) -> bool:
        """True when a language was decided."""
        return self.language != UNKNOWN


_MODEL_LOCK = threading.Lock()
_MODEL: Any = None


def _model() -> Any:
    # One identifier per process, built on first use: loading costs about a second, and the
    # identifier only reads its tables afterwards, so threads may share it.
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _MODEL = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _MODEL


def clean_for_detection(text: str) -> str:
    """Remove what carries no language: links, e-mail addresses, handles, hashtags, digits, emoji."""
    return " ".join(_NOISE.sub(" ", text).split())


class LanguageDetector:
    """Detects languages with thresholds for short and uncertain texts.

    Args:
        min_letters: Fewer letters than this (after cleaning) gives ``unknown`` / ``too_short``.
            Scripts written without spaces (Chinese, Japanese, Korean, Thai) need half as many.
        min_confidence: A top probability below this gives ``unknown`` / ``low_confidence``.
        languages: Restrict the answer to these ISO codes (e.g. the languages a deployment
            receives); ``None`` keeps all 140 of the model's languages.

    Raises:
        ValueError: ``languages`` names a code the model does not know.
    """

    def __init__(
        self,
        *,
        min_letters: int = 4,
        min_confidence: float = 0.2,
        languages: Collection[str] | None = None,
    ) -> None:
        self.min_letters = min_letters
        self.min_confidence = min_confidence
        self._identifier: Any = None
        if languages is not None:
            # A restricted identifier has its own tables: build it now (a second or so) so an
            # unknown code fails at configuration time, and leave the shared one untouched.
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            wanted = set(languages) | {"zxx"}  # keep "no language" as an answer
            unknown = wanted - set(ident.labels)
            if unknown:
                raise ValueError(f"unknown language code(s) {sorted(unknown)} for the detector")
            ident.set_languages(sorted(wanted))
            self._identifier = ident

    def _get(self) -> Any:
        if self._identifier is None:
            self._identifier = _model()
        return self._identifier

    def detect(self, text: str) -> LanguageGuess:
        """Detect the language of one text."""
        cleaned = clean_for_detection(text)
        letters = sum(map(str.isalpha, cleaned))
        needed = (self.min_letters + 1) // 2 if _DENSE_SCRIPT.search(cleaned) else self.min_letters
        if letters < needed:
            return LanguageGuess(UNKNOWN, 0.0, "too_short")
        language, confidence = self._get().classify(cleaned)
        confidence = float(confidence)
        if language == "zxx":
            return LanguageGuess(UNKNOWN, confidence, "no_language")
        if confidence < self.min_confidence:
            return LanguageGuess(UNKNOWN, confidence, "low_confidence")
        return LanguageGuess(str(language), confidence)

    def detect_many(self, texts: Iterable[str]) -> list[LanguageGuess]:
        """Batch form of :meth:`detect`: one guess per text, in order."""
        return [self.detect(text) for text in texts]


@functools.lru_cache(maxsize=8)
def shared_detector(languages: tuple[str, ...] | None = None) -> LanguageDetector:
    """One detector per language set and process, built on first use (about a second each).

    Args:
        languages: The ISO codes to restrict answers to, as a tuple (it is the cache key);
            ``None`` for all of the model's languages.
    """
    return LanguageDetector(languages=languages)


def detect_language(text: str) -> LanguageGuess:
    """Detect the language of ``text`` with the default thresholds."""
    return shared_detector().detect(text)


def detect_languages(texts: Iterable[str]) -> list[LanguageGuess]:
    """Detect the language of each text with the default thresholds."""
    return shared_detector().detect_many(texts)
