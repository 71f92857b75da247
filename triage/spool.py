"""Spools: append-only JSON Lines files that make a request durable before it is acknowledged.

Both long-running servers write to one instead of the store: the web-form intake spools each post
for the ``webhook`` source, the Slack review app each click for the review worker. A server must
never hold the DuckDB file (one writing process per file), and a spool append is fast whatever
the store is doing. The protocol, the same for both (README, "Reliability"):

* an append is written and fsynced before the caller answers its client; a new file's directory
  entry is fsynced too, or the file could vanish in a crash;
* a line torn by a crash mid-append (never acknowledged) is ended before the next append, so the
  next record is not glued onto it; the reader then sets the torn line aside with a reason;
* rewrites (dropping applied lines) go through a temporary file and an atomic rename.

:func:`write_json_atomic` replaces a whole JSON file the same crash-safe way (the model
registry's pointer).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """Make a new or renamed file's directory entry durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so that a crash leaves the old file or the new one.

    Temp file in the same folder, fsync, rename over the target, fsync the folder (the rename
    itself must reach the disk before we report success).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    payload = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes, start: int) -> None:
    """Write all of ``data`` at the end of the file, or none of it.

    A write to a nearly full disk can be short: the rest of the record then fails. What was written
    is cut off again (the file was ``start`` bytes before), so that a record the caller goes on to
    refuse (a 500, a retry) is not left behind as the start of a line that the next append ends.
    """
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(errno.ENOSPC, "no progress writing to the spool")
            view = view[written:]
    except OSError:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass  # the torn end is then ended and set aside by the next append, as after a crash
        raise


class JsonlSpool:
    """One append-only JSON Lines file.

    Args:
        path: The file (created, with its folder, on the first append).
        shared: True when other processes append or rewrite too (the review spool: the server
            and every flow run): a lock file (``flock``) then serialises them. It is held only
            for file operations, never while waiting for anything else.
    """

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        """Use ``path``; see the class docstring."""
        self.path = path
        self.shared = shared
        self._lock_path = path.with_name(path.name + ".lock")
        self._thread_lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the spool against other threads (and, when shared, other processes)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            if not self.shared:
                yield
                return
            with open(self._lock_path, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, data: bytes) -> None:
        """Durably append complete lines (each ending in a newline); call under :meth:`locked`."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A crash mid-write can leave a last line without its newline; end it first so
                # this record is not glued onto it (the torn line is then set aside by a reader).
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
            _write_all(fd, data, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    def lines(self) -> list[str]:
        """Every non-blank line, oldest first; call under :meth:`locked`.

        Each line is decoded on its own: bytes that are not UTF-8 (a line torn inside a character
        by a crash) become U+FFFD in that line, which its reader then sets aside, instead of one
        such line making the whole file unreadable for ever.
        """
        if not self.path.exists():
            return []
        return [
            text
            for line in self.path.read_bytes().splitlines()
            if (text := line.decode("utf-8", "replace")).strip()
        ]

    def rewrite(self, lines: list[str]) -> None:
        """Replace the file's lines atomically (a crash leaves the old or the new file whole)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
