"""The documented size limits of every destination, and one way to fit escaped text into them.

Text from the public is escaped for its destination first (Slack's ``&amp;``, HTML entities) and
cut afterwards, because escaping can grow a text up to five-fold: cutting first and escaping
second is how a 2,600-character text became a 3,400-character section that Slack refused.
"""

from __future__ import annotations

from collections.abc import Callable

# Slack Block Kit (Block Kit reference: blocks, elements, composition objects).
SLACK_TEXT = 3000  # a section's text, and any mrkdwn/plain_text object in a context block
SLACK_SECTION_FIELD = 2000
SLACK_HEADER = 150
SLACK_BUTTON_TEXT = 75
SLACK_OPTION_TEXT = 75
SLACK_PLACEHOLDER = 150
SLACK_VALUE = 2000  # a button's value
SLACK_OPTION_VALUE = 150
SLACK_ACTION_ID = 255
SLACK_BLOCK_ID = 255
SLACK_URL = 3000
SLACK_BLOCKS_PER_MESSAGE = 50
SLACK_BLOCKS_PER_VIEW = 100  # modals and the App Home tab
SLACK_CONTEXT_ELEMENTS = 10
SLACK_ACTIONS_ELEMENTS = 25
SLACK_SELECT_OPTIONS = 100
# chat.postMessage's top-level ``text``: Slack truncates beyond 40,000 characters and advises
# about 4,000; ours is a notification fallback, so it stays well inside both.
SLACK_FALLBACK_TEXT = 3000

# HubSpot CRM: a note's ``hs_note_body`` holds at most 65,536 characters (HTML included).
HUBSPOT_NOTE_BODY = 65_536
# GitHub REST: an issue's or comment's ``body`` at most 65,536 characters; a title 256.
GITHUB_BODY = 65_536
GITHUB_TITLE = 256
# Zendesk: a comment is limited by size (64 KB), which is ~65,000 characters of ASCII; counted in
# UTF-8 bytes here so non-Latin text cannot pass the limit either.
ZENDESK_COMMENT_BYTES = 64_000
ZENDESK_SUBJECT = 255

TRUNCATED = " …[truncated]"
# The longest entity the escapers produce (``&#x27;``) plus slack: a cut inside one is undone.
_ENTITY_MAX = 8


def utf8_len(text: str) -> int:
    """Size of ``text`` in UTF-8 bytes (for limits counted in bytes)."""
    return len(text.encode("utf-8"))


def clip(
    escaped: str,
    limit: int,
    *,
    marker: str = TRUNCATED,
    size: Callable[[str], int] = len,
) -> str:
    """Cut already-escaped text to at most ``limit`` (by ``size``), never inside an entity.

    Args:
        escaped: Text that was escaped for its destination.
        limit: The destination's limit for this field.
        marker: Appended when something was cut, so readers see that it was.
        size: How the destination counts: characters (default) or :func:`utf8_len`.

    Returns:
        ``escaped`` itself when it fits, else a prefix ending in ``marker`` that fits.
    """
    if size(escaped) <= limit:
        return escaped
    budget = limit - size(marker)
    if budget <= 0:
        return marker.strip()[:limit]
    if size is len:
        cut = escaped[:budget]
    else:
        # Binary search on characters for the longest prefix within the budget.
        lo, hi = 0, min(len(escaped), budget)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(escaped[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        cut = escaped[:lo]
    amp = cut.rfind("&", max(0, len(cut) - _ENTITY_MAX))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]  # "&am" would show as garbage, or break the markup it escapes
    return cut.rstrip() + marker


def fit(
    text: str, limit: int, escape: Callable[[str], str], *, size: Callable[[str], int] = len
) -> str:
    """Escape ``text`` for its destination, then cut it to ``limit``: the order that is safe."""
    return clip(escape(text), limit, size=size)
