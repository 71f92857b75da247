"""Privacy engines: redaction of personal data and language detection (README, "Privacy").

Self-contained and not yet wired into the store, delivery or flows. The calls the pipeline will
make::

    from triage.privacy import Redactor, CustomPattern, detect_languages

    redactor = Redactor(custom=[CustomPattern("order", r"\\bORD-\\d{6}\\b")])
    redactor.storable_many(texts)              # before storing: card numbers never in clear
    redactor.redact_many(texts, keep=("email",))  # per destination profile
    detect_languages(texts)                    # LanguageGuess(language, confidence, reason)

See :mod:`triage.privacy.redact` and :mod:`triage.privacy.language` for the details, and
``python -m triage.privacy.evaluate`` for the measured recall, precision and speed.
"""

from triage.privacy.language import (
    UNKNOWN,
    LanguageDetector,
    LanguageGuess,
    detect_language,
    detect_languages,
)
from triage.privacy.redact import (
    BUILTIN_KINDS,
    NEVER_KEPT,
    CustomPattern,
    Redactor,
    Span,
    redact,
    storable,
)

__all__ = [
    "BUILTIN_KINDS",
    "NEVER_KEPT",
    "UNKNOWN",
    "CustomPattern",
    "LanguageDetector",
    "LanguageGuess",
    "Redactor",
    "Span",
    "detect_language",
    "detect_languages",
    "redact",
    "storable",
]
