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
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
_MODEL: _BatchClassifier | None = None


def _identifier(languages: Collection[str] | None = None) -> Any:
    # A fresh py3langid identifier (about a second to load), restricted to ``languages``.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages is not None:
        wanted = set(languages) | {"zxx"}  # keep "no language" as an answer
        unknown = wanted - set(ident.labels)
        if unknown:
            raise ValueError(f"unknown language code(s) {sorted(unknown)} for the detector")
        ident.set_languages(sorted(wanted))
    return ident


def _model() -> _BatchClassifier:
    # One classifier over all languages per process, built on first use: loading costs about a
    # second, and it only reads its tables afterwards, so threads may share it.
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            _MODEL = _BatchClassifier(_identifier())
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
        self._classifier: _BatchClassifier | None = None
        if languages is not None:
            # A restricted classifier has its own tables: build it now (a second or so) so an
            # unknown code fails at configuration time, and leave the shared one untouched.
            self._classifier = _BatchClassifier(_identifier(languages))

    def _batch(self) -> _BatchClassifier:
        if self._classifier is None:
            self._classifier = _model()
        return self._classifier

    def _long_enough(self, cleaned: str) -> bool:
        # Counting stops at the letters needed, so most texts pass within their first word.
        letters = 0
        for char in cleaned:
            if char.isalpha():
                letters += 1
                if letters >= self.min_letters:
                    return True
        # Scripts written without spaces need half as many.
        return bool(_DENSE_SCRIPT.search(cleaned)) and letters >= (self.min_letters + 1) // 2

    def detect(self, text: str) -> LanguageGuess:
        """Detect the language of one text."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: Iterable[str]) -> list[LanguageGuess]:
        """Batch form of :meth:`detect`: one guess per text, in order.

        The answers are py3langid's own; they are computed for the whole batch at once, which
        is several times faster per text than one call per text (README, "Privacy").
        """
        guesses: list[LanguageGuess | None] = []
        pending: list[int] = []
        cleaned_texts: list[str] = []
        for text in texts:
            cleaned = clean_for_detection(text)
            if not self._long_enough(cleaned):
                guesses.append(LanguageGuess(UNKNOWN, 0.0, "too_short"))
                continue
            pending.append(len(guesses))
            cleaned_texts.append(cleaned)
            guesses.append(None)
        for n, (language, confidence) in zip(
            pending, self._batch().classify(cleaned_texts), strict=True
        ):
            if language == "zxx":
                guesses[n] = LanguageGuess(UNKNOWN, confidence, "no_language")
            elif confidence < self.min_confidence:
                guesses[n] = LanguageGuess(UNKNOWN, confidence, "low_confidence")
            else:
                guesses[n] = LanguageGuess(language, confidence)
        return [guess for guess in guesses if guess is not None]


# A chunk is walked byte position by byte position, all its texts at once; once fewer texts than
# this are still walking (the longest ones), a plain loop per text is cheaper than numpy calls.
_FEW_LEFT = 8
# Texts are scored in chunks of similar length holding about this many bytes: one long e-mail in
# a batch of tweets then does not widen every row, and a chunk's temporaries stay near 20 MB.
_CHUNK_BYTES = 32 * 1024


class _BatchClassifier:
    """py3langid's ``classify`` for many texts at once, with the same answers.

    py3langid walks a byte automaton one text and one byte at a time in Python and then sums
    one table row per byte n-gram found, about 60 µs per tweet in all; that made language
    detection the largest cost of storing a mention. Here the automaton takes one step for a
    whole chunk of texts per numpy call, and the sums are one gather from the table, added up in
    feature order (so a text scores the same in any batch). Scores differ from py3langid's only
    by float rounding (float32 sums in another order); tests compare the two on about 800 texts
    of every length and script.

    Args:
        identifier: A ``py3langid.langid.LanguageIdentifier`` built with ``norm_probs=True``,
            already restricted to its languages (the restriction is read here, once).
    """

    def __init__(self, identifier: Any) -> None:
        # Only what scoring needs is kept, so py3langid's float16 tables (the full one and the
        # restricted copy, 37 MB) are freed once this is built.
        self._encode = identifier._encode
        self._labels: list[str] = [str(label) for label in identifier.nb_classes]
        self._alias_pairs: list[tuple[int, int]] = list(identifier._alias_pairs)
        self._prior = np.asarray(identifier.nb_pc, dtype=np.float32)
        # numpy converts float16 slowly, so the (language-restricted) table is kept in float32:
        # 18 MB for the store's 42 languages, 57 MB for all 140.
        self._table = identifier.nb_ptc.astype(np.float32)
        # A view of py3langid's automaton table, not a copy (39 MB).
        self._next = np.frombuffer(identifier.tk_nextmove, dtype=np.uint32)
        self._rowbase = np.frombuffer(identifier.tk_row, dtype=np.uint16).astype(np.int64) << 8
        self._output = np.asarray(identifier.tk_output, dtype=np.int32)
        # Plain-Python forms for the per-text loop at the end of a chunk.
        self._next_list: Any = identifier.tk_nextmove
        self._rowbase_list: list[int] = self._rowbase.tolist()
        self._output_list: list[int] = identifier.tk_output

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """``(language, probability)`` for each text, in order (``zxx`` means no language)."""
        encoded: list[bytes] = [self._encode(text) for text in texts]
        n = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        scores = np.zeros((n, len(self._labels)), dtype=np.float32)
        start = 0
        while start < n:
            width = max(int(lengths[order[start]]), 1)
            stop = min(n, start + max(1, _CHUNK_BYTES // width))
            rows = order[start:stop]
            scores[rows] = self._chunk_scores([encoded[r] for r in rows], lengths[rows])
            start = stop
        # As py3langid does with norm_probs: temperature sqrt(bytes), softmax, then aliased
        # columns (one language under two scripts) folded into their first column.
        scores /= np.sqrt(np.maximum(lengths, 1)).astype(np.float32)[:, None]
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for first, dupe in self._alias_pairs:
            scores[:, first] += scores[:, dupe]
            scores[:, dupe] = 0.0
        best = scores.argmax(axis=1)
        labels = self._labels
        return [
            (labels[i], float(p))
            for i, p in zip(best.tolist(), scores[np.arange(n), best].tolist(), strict=True)
        ]

    def _chunk_scores(self, encoded: list[bytes], lengths: np.ndarray) -> np.ndarray:
        """Naive Bayes log scores of texts sorted longest first (zeros for featureless ones)."""
        n = len(encoded)
        width = max(int(lengths[0]), 1)
        data = np.zeros((n, width), dtype=np.int64)
        data[np.arange(width)[None, :] < lengths[:, None]] = np.frombuffer(
            b"".join(encoded), dtype=np.uint8
        )
        features = np.full((n, width), -1, dtype=np.int32)
        # The row offset of each text's current state; every walk starts in state 0.
        base = np.full(n, self._rowbase[0], dtype=np.int64)
        walking, pos = n, 0
        while pos < width:
            while walking and lengths[walking - 1] <= pos:
                walking -= 1
            if walking < _FEW_LEFT:
                break
            state = self._next[base[:walking] + data[:walking, pos]]
            features[:walking, pos] = self._output[state]
            base[:walking] = self._rowbase[state]
            pos += 1
        nxt, rowbase, output = self._next_list, self._rowbase_list, self._output_list
        for r in range(walking):
            offset, tail = int(base[r]), []
            for byte in encoded[r][pos:]:
                state = nxt[offset + byte]
                tail.append(output[state])
                offset = rowbase[state]
            features[r, pos : pos + len(tail)] = tail
        return self._sums(features)

    def _sums(self, features: np.ndarray) -> np.ndarray:
        """Per text, the class prior plus log(1 + count) times each distinct feature's row."""
        table = self._table
        n = len(features)
        scores = np.zeros((n, table.shape[1]), dtype=np.float32)
        row, col = np.nonzero(features >= 0)
        if not len(row):
            return scores
        n_features = table.shape[0]
        keys, counts = np.unique(row * n_features + features[row, col], return_counts=True)
        text = keys // n_features
        # One padded row of (feature, weight) pairs per text, padding weighted 0. Summed over
        # that axis, numpy adds the rows in order, so the padding adds exact zeros and a text
        # scores the same in any batch (a matrix product would not: its blocking follows the
        # batch's width).
        per_text = np.bincount(text, minlength=n)
        firsts = np.cumsum(per_text) - per_text
        slot = np.arange(len(keys)) - firsts[text]
        index = np.zeros((n, int(per_text.max())), dtype=np.int64)
        weight = np.zeros(index.shape, dtype=np.float32)
        index[text, slot] = keys % n_features
        weight[text, slot] = np.log1p(counts.astype(np.float32))
        rows = table[index]
        rows *= weight[:, :, None]
        scores = rows.sum(axis=1)
        # py3langid adds the prior only where a feature was found (otherwise all scores are 0).
        scores[per_text > 0] += self._prior
        return scores


@functools.lru_cache(maxsize=8)
def _detector(languages: tuple[str, ...] | None) -> LanguageDetector:
    return LanguageDetector(languages=languages)


_DETECTORS_LOCK = threading.Lock()


def shared_detector(languages: tuple[str, ...] | None = None) -> LanguageDetector:
    """One detector per language set and process, built on first use (about a second each).

    Args:
        languages: The ISO codes to restrict answers to, as a tuple (it is the cache key);
            ``None`` for all of the model's languages.
    """
    # lru_cache does not hold other callers back while it computes a missing entry: the triage
    # flow ingests its sources in parallel threads, and each built its own detector (three
    # loads of py3langid's model at once, about 250 MB each at the peak of loading).
    with _DETECTORS_LOCK:
        return _detector(languages)


def release_shared() -> None:
    """Let go of the shared detectors and model (about 100 MB); the next use loads them again.

    The triage flow calls this once its sources are stored: nothing after that detects languages,
    and the classifier it loads next needs the room (README, "Performance"). A detector someone
    still holds keeps working: only the process-wide references are dropped.
    """
    global _MODEL
    with _DETECTORS_LOCK:
        _detector.cache_clear()
    with _MODEL_LOCK:
        _MODEL = None


def detect_language(text: str) -> LanguageGuess:
    """Detect the language of ``text`` with the default thresholds."""
    return shared_detector().detect(text)


def detect_languages(texts: Iterable[str]) -> list[LanguageGuess]:
    """Detect the language of each text with the default thresholds."""
    return shared_detector().detect_many(texts)
