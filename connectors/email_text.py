"""The sender's new words in an email: the body as text, without quoted replies or signatures.

Plain parts are preferred and HTML parts converted to text; each part is decoded with its own
charset. What follows is dropped: ``>`` lines, everything from an "On … wrote:" or "Original
Message" header on, HTML ``<blockquote>``s, a ``-- `` signature and a closing sign-off block.
"""

from __future__ import annotations

import html
import re
from email.message import Message
from html.parser import HTMLParser
from typing import ClassVar

# Sign-off lines that start a closing block; matched only as a whole line, so "Thanks for the
# fast fix!" stays in the text while a bare "Thanks," near the end starts the signature.
_SIGN_OFF = re.compile(
    r"^(best|kind|warm|many thanks|thanks|thank you|regards|best regards|kind regards|"
    r"warm regards|cheers|sincerely|yours sincerely|yours truly|all the best|br|thx|"
    r"sent from my \w+.*|get outlook for \w+.*)[\s,.!]*$",
    re.IGNORECASE,
)
# Where a quoted earlier message begins: everything from here down is not the sender's new text.
_QUOTE_HEADER = re.compile(
    r"^(on\b.{0,200}\bwrote:\s*$|-{2,}\s*original message\s*-{2,}|_{10,}\s*$|"
    r"from:\s.+\s*$|le\b.{0,200}\ba écrit\s*:\s*$|am\b.{0,200}\bschrieb\b.*:\s*$)",
    re.IGNORECASE,
)
# How far from the end a sign-off may start and still be a closing block, in non-blank lines.
_SIGN_OFF_WINDOW = 6


class _HtmlText(HTMLParser):
    """Collect the visible text of an HTML body: no script/style, line breaks at block ends."""

    _BLOCK: ClassVar[frozenset[str]] = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}
    )
    _SKIP: ClassVar[frozenset[str]] = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        # Mail clients wrap the quoted earlier message in a blockquote: it is not new text.
        if tag == "blockquote":
            self._quote += 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag == "blockquote" and self._quote:
            self._quote -= 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip and not self._quote:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Return the visible text of an HTML mail body.

    Args:
        markup: The HTML part, already decoded to str.

    Returns:
        Text with one line per block element and collapsed spaces.
    """
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    text = html.unescape("".join(parser.parts))
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode_part(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        # An unknown charset name: UTF-8 with replacement keeps the words we can read.
        return payload.decode("utf-8", errors="replace")


def body_text(msg: Message) -> str:
    """Extract the body as text: the plain parts, else the HTML parts converted to text.

    Attachments (parts with a file name or ``attachment`` disposition) are skipped.

    Args:
        msg: The parsed message.

    Returns:
        The body text (may be empty).
    """
    plain: list[str] = []
    htmls: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_filename() or part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_decode_part(part))
        elif ctype == "text/html":
            htmls.append(_decode_part(part))
    text = "\n".join(p for p in plain if p.strip())
    if text.strip():
        return text
    return "\n".join(html_to_text(h) for h in htmls if h.strip())


def strip_reply(text: str) -> str:
    """Remove quoted replies and signature blocks, keeping what the sender wrote this time.

    Args:
        text: A plain-text mail body.

    Returns:
        The new text: ``>`` lines, everything after an "On ... wrote:" style header, after a
        ``-- `` signature separator, and a closing sign-off block near the end are removed.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for line in lines:
        stripped = line.strip()
        if line.rstrip("\n") in ("-- ", "--") or _QUOTE_HEADER.match(stripped):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line.rstrip())
    # A sign-off in the last few non-blank lines starts the closing block (name, title, phone).
    nonblank = [i for i, line in enumerate(kept) if line.strip()]
    for i in nonblank[-_SIGN_OFF_WINDOW:]:
        if i != nonblank[0] and _SIGN_OFF.match(kept[i].strip()):
            kept = kept[:i]
            break
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
