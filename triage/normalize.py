"""Text normalisation before classification: keep the meaning, drop the noise.

Handles, links and stretched words vary endlessly but carry little signal on their own; mapping them
to stable tokens lets the model learn "someone @-mentioned a brand and posted a link" once.
"""

from __future__ import annotations

import re

_URL = re.compile(
    r"(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|net|org|io|co|ly|biz|me)(?:/\S*)?\b", re.IGNORECASE
)
_HANDLE = re.compile(r"(?<![\w@])@\w{1,30}")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
_REPEAT = re.compile(r"(\w)\1{2,}")
_HASHTAG = re.compile(r"#(\w+)")
# A bare domain needs one of these endings; searching for it first is far cheaper than _URL.
_TLD = re.compile(r"\.(?:com|net|org|io|co|ly|biz|me)\b", re.IGNORECASE)

# The classifier's words in normalised text (letters, digits, underscores, apostrophes inside
# words), else runs of one symbol kind: how the tokenizer splits, and what the vectors cover.
TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]+")


def normalize(text: str) -> str:
    """Return the text as the classifier sees it.

    Emails, URLs and @handles become ``emailaddr``, ``urllink`` and ``@user``; letters repeated three
    or more times shrink to two ("soooo" -> "soo"); hashtags lose the ``#`` so ``#fail`` reads as
    ``fail``; whitespace collapses; text is lower-cased (the bag-of-n-grams model matches exact
    tokens, so "Thanks" and "thanks" must be one feature). Emoji and punctuation are kept: they
    carry tone.

    Example:
        >>> normalize("@SkyJet soooo late again!!! https://t.co/x #fail")
        '@user soo late again!!! urllink fail'
    """
    # Cheap substring guards skip regex passes that cannot match: this runs on every item.
    if "@" in text:
        text = _EMAIL.sub(" emailaddr ", text)
    if "http" in text or "www." in text or _TLD.search(text):
        text = _URL.sub(" urllink ", text)
    if "@" in text:
        text = _HANDLE.sub("@user", text)
    text = _REPEAT.sub(r"\1\1", text)
    if "#" in text:
        text = _HASHTAG.sub(r"\1", text)
    return " ".join(text.split()).lower()
