"""Reading a file that holds one JSON array, element by element, with byte positions.

Helpdesk and review-tool exports are often one array of objects, pretty-printed over many lines,
not JSON Lines. The ``file`` source reads such a file one element at a time, never whole, and keeps
its cursor as the byte offset just after the last element it handed out, so a backfill that stops
part way resumes there, as it does in a JSON Lines file.

What can go wrong stays local, as it does for a line of JSON Lines: an element that is not valid
JSON, or is longer than ``max_record_bytes``, is found by its brackets and quotes and reported with
the line it starts on, and reading goes on after it (an object that runs into the next one, its
``}`` missing, ends where that one starts; brackets are matched by kind, so one missing inside
the element does not carry it past the elements after it). An array whose end has not been written yet
waits for the next run, unless the file is finished (``final``): then the missing end is reported
once. One that is broken past where its brackets can be followed is reported once, and the rest of
that file is not read.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Text is decoded with surrogateescape so that bytes that are not UTF-8 survive to the strict
# check (orjson, in connectors.records.decode_json) and are reported there, for that element only.
_ERRORS = "surrogateescape"
_CHUNK = 1024 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# What decides where an element ends when it cannot be parsed: quotes, escapes and brackets.
_STRUCTURE = re.compile(r'["\\\[\]{}]')
# Where a bare number or literal (or stray text) ends.
_SCALAR_END = re.compile(r"[,\] \t\n\r]")
_DECODER = json.JSONDecoder()
# Said of an array that ends before its closing bracket in a finished file.
_CUT_OFF = (
    " (cut off? the elements before it were read; if the file is written again, or finished, it "
    "is read again from the start)"
)


def is_array_file(path: Path) -> bool:
    """Whether the file's first character that is not whitespace (or a BOM) is ``[``."""
    with path.open("rb") as fh:
        head = fh.read(3).removeprefix(codecs.BOM_UTF8)
        while True:
            head = head.lstrip(b" \t\r\n")
            if head:
                return head[:1] == b"["
            head = fh.read(4096)
            if not head:
                return False


@dataclass(frozen=True, slots=True)
class Element:
    """One element of the array: its JSON text, or why it cannot be a record."""

    line: int
    """The line the element starts on, counted from 1 at the start of the file."""
    text: str
    """The element's JSON text (only its first 200 characters when it is too long)."""
    error: str | None = None
    """Why the element is not read as a record; None when ``text`` is the whole element."""


class ArrayReader:
    """The elements of one JSON array file from a byte offset, each at most ``limit`` bytes.

    ``pos`` and ``line`` are where the next run resumes: just after the last element handed out
    (the array's opening bracket is read again when that is the start of the file). ``closed``
    turns True once the array's closing bracket has been read; ``pos`` is then the end of the file.
    ``final`` says that nothing more will be written: an array that ends before its closing
    bracket is then reported and closed, where otherwise it waits.
    """

    def __init__(
        self,
        fh: IO[bytes],
        offset: int,
        line: int,
        limit: int,
        chunk: int = _CHUNK,
        final: bool = False,
    ) -> None:
        self.fh = fh
        self.limit = limit
        self.final = final
        self.chunk = chunk  # bytes read at a time (tests make it tiny, to split everything)
        self.pos = offset
        self.line = line
        self.closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(_ERRORS)
        self._buf = ""
        self._i = 0  # the read position in _buf
        self._bpos = offset  # its byte offset in the file ...
        self._bline = line  # ... and the lines before it
        self._eof = False
        # Resuming after an element: a comma or the closing bracket comes next.
        self._state = "open" if offset == 0 else "after"
        fh.seek(offset)

    def next(self) -> Element | None:
        """The next element; None at the end of the array or of what has been written so far."""
        while not self.closed:
            char = self._peek()
            if not char:
                if not self.final:
                    return None  # the rest of the array is not written yet: it waits
                line = self._bline + 1
                self._close()
                return Element(line, "", f"the file ends before the array's closing ']'{_CUT_OFF}")
            if self._state == "open":
                if char == "\ufeff" and self._bpos == 0:
                    self._advance(self._i + 1)
                    continue
                if char != "[":
                    head = Element(self._bline + 1, self._head(), "the file does not open an array")
                    self._close()
                    return head
                self._advance(self._i + 1)
                self._state = "value"
            elif char == "]":
                # Also after a trailing comma, which JSON does not allow but exports do write.
                self._advance(self._i + 1)
                return self._close()
            elif char == ",":
                self._advance(self._i + 1)
                self._state = "value"
            else:
                # A value, also where a comma is missing: reading on loses nothing.
                self._state = "after"
                return self._element()
        return None

    def _element(self) -> Element | None:
        start = self._bline + 1
        while True:
            try:
                _, end = _DECODER.raw_decode(self._buf, self._i)
            except json.JSONDecodeError as exc:
                if not self._eof and len(self._buf) - self._i <= self.limit:
                    self._fill()  # the element may simply go on in the next chunk
                    continue
                reason = f"invalid JSON: {exc.msg.removesuffix(' at')}"
                if self._buf[exc.pos : exc.pos + 1] == "{" and self._open(exc.pos) == "{":
                    return self._cut(start, exc.pos, reason)
                return self._unreadable(start, reason)
            except (RecursionError, ValueError) as exc:
                # Nesting too deep for Python's decoder, or an integer past its 4,300 digits:
                # the element is quarantined like any other that cannot be read.
                return self._unreadable(start, f"unreadable JSON: {type(exc).__name__}: {exc}")
            if end == len(self._buf) and self._buf[end - 1] not in '}]"':
                if not self._eof:
                    self._fill()  # a number or literal at the end of a chunk may go on
                    continue
                if not self.final:
                    return None  # a number cut off by the end of the file: it waits too
            size, text = self._advance(end)
            if size > self.limit:
                return self._commit(Element(start, text[:200], _too_long(size, self.limit)))
            return self._commit(Element(start, text))

    def _open(self, end: int) -> str:
        """The brackets the element at the read position leaves open at ``end`` ('' in a string)."""
        scan = _Strings()
        stack: list[str] = []
        for _, char in scan.structure(self._buf, self._i, end):
            if char in "[{":
                stack.append(char)
            elif char != '"' and stack:
                stack.pop()
        return "" if scan.inside else "".join(stack)

    def _cut(self, start: int, end: int, reason: str) -> Element:
        """End a broken object where an object starts in place of its next key or comma.

        That is where an element whose closing brace is missing runs into the next one. Followed
        by its brackets instead, it would take in every element after it, up to the array's end.
        """
        size, text = self._advance(end)
        reason += (
            f"; an object starts on line {self._bline + 1} before this one is closed (a missing "
            "'}'?), so this element is read as ending there and reading goes on from that object"
        )
        if size > self.limit:
            return self._commit(
                Element(start, text[:200], f"{_too_long(size, self.limit)}; {reason}")
            )
        return self._commit(Element(start, text.rstrip(" \t\r\n"), reason))

    def _unreadable(self, start: int, reason: str) -> Element | None:
        """Find the end of an element that does not parse, by its brackets and quotes."""
        found, size, kept, last = self._skip()
        if found:
            if size > self.limit:
                reason = _too_long(size, self.limit)
            return self._commit(Element(start, kept[:200] if size > self.limit else kept, reason))
        if last != "]" and not self.final:
            return None  # the file ends inside the element: its writer may not be done yet
        # Cut off in a finished file; or the file's last character is ']', so it looks finished
        # (if its writer was not done after all, the file's size changes when it is, and a closed
        # array is then read again).
        self._close()
        rest = (
            f"the file ends inside it{_CUT_OFF}"
            if last != "]"
            else "the rest of the file is not read (fix the file, then run `triage sources "
            "reset` for this source)"
        )
        return Element(start, kept[:200], f"{reason}; {rest}")

    def _skip(self) -> tuple[bool, int, str, str]:
        """Move past the element at the read position, keeping at most ``limit`` characters.

        Returns:
            ``(found, size in bytes, text kept, last character that is not whitespace)``;
            ``found`` is False when the file ends first.
        """
        first = self._buf[self._i]
        # The brackets the element has open, innermost last: a closer is matched by its kind.
        opened, scan = list[str](), _Strings()
        size, kept, last = 0, list[str](), ""
        while True:
            buf, end = self._buf, None
            if first not in '{["':
                # At least one character: the one that could not start a value.
                match = _SCALAR_END.search(buf, self._i + (size == 0))
                end = match.start() if match else None
            else:
                for k, char in scan.structure(buf, self._i):
                    if char == '"':
                        if not opened:  # a string element ends with its closing quote
                            end = k + 1
                            break
                    elif char in "[{":
                        opened.append(char)
                    elif (kind := "[" if char == "]" else "{") in opened:
                        # A closer also closes what was left open inside it: counted as mere
                        # depth, one missing '}' in a nested list ("[{...]") kept the element
                        # open past every element after it, up to the end of the file.
                        del opened[len(opened) - 1 - opened[::-1].index(kind) :]
                        if not opened:
                            end = k + 1
                            break
                    else:
                        # It closes nothing this element opened: the array's own ']' (or a stray
                        # brace) ends the element before it, and the array closes as written.
                        end = k
                        break
            stop = len(buf) if end is None else end
            part_size, part = self._advance(stop)
            if size < self.limit:
                kept.append(part[: self.limit - size])
            size += part_size
            last = part.rstrip(" \t\r\n")[-1:] or last  # JSON whitespace only
            if end is not None:
                return True, size, "".join(kept), last
            scan.shift(len(buf))
            if not self._fill():
                return False, size, "".join(kept), last

    def _close(self) -> Element | None:
        """The array is over: anything after it is not read, and the cursor moves to the end."""
        self.closed = True
        rest = self._peek()
        self.fh.seek(0, 2)
        self.pos, self.line = self.fh.tell(), self._bline
        if rest:
            return Element(self._bline + 1, self._head(), "text after the array's end is not read")
        return None

    def _commit(self, element: Element) -> Element:
        self.pos, self.line = self._bpos, self._bline
        return element

    def _head(self) -> str:
        return self._buf[self._i : self._i + 200]

    def _peek(self) -> str:
        """The next character that is not JSON whitespace; '' at the end of the file."""
        while True:
            self._advance(_WHITESPACE.match(self._buf, self._i).end())  # type: ignore[union-attr]
            if self._i < len(self._buf):
                return self._buf[self._i]
            if not self._fill():
                return ""

    def _advance(self, end: int) -> tuple[int, str]:
        """Move the read position to ``end``; the bytes and the text passed over."""
        text = self._buf[self._i : end]
        size = len(text.encode("utf-8", _ERRORS))
        self._bpos += size
        self._bline += text.count("\n")
        self._i = end
        return size, text

    def _fill(self) -> bool:
        """Read the next chunk into the buffer, dropping what was read; False at the end."""
        if self._eof:
            return False
        data = self.fh.read(self.chunk)
        self._eof = not data
        more = self._decoder.decode(data, final=self._eof)
        self._buf = self._buf[self._i :] + more
        self._i = 0
        return bool(more) or not self._eof


class _Strings:
    """Where JSON strings begin and end in text read left to right, across buffer refills."""

    def __init__(self) -> None:
        self.inside = False
        self.skip_to = 0  # the character after a backslash, which is never structure

    def structure(self, buf: str, start: int, end: int | None = None) -> Iterator[tuple[int, str]]:
        """The brackets outside strings in ``buf[start:end]``, and the quote that ends each string."""
        stop = len(buf) if end is None else end
        for match in _STRUCTURE.finditer(buf, max(start, self.skip_to), stop):
            k = match.start()
            if k < self.skip_to:
                continue
            char = buf[k]
            if self.inside:
                if char == "\\":
                    self.skip_to = k + 2
                elif char == '"':
                    self.inside = False
                    yield k, char
            elif char == '"':
                self.inside = True
            elif char != "\\":  # a backslash outside a string is only a broken value
                yield k, char

    def shift(self, n: int) -> None:
        """The buffer dropped its first ``n`` characters (a refill)."""
        self.skip_to = max(0, self.skip_to - n)


def _too_long(size: int, limit: int) -> str:
    return (
        f"record is {size:,} bytes, over max_record_bytes ({limit:,}); "
        "not read (raise max_record_bytes to read it)"
    )
