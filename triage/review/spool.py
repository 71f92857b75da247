"""The decision spool: clicks kept durably until the review worker has applied them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from triage.review.clicks import Decision
from triage.spool import JsonlSpool


class DecisionSpool:
    """Decisions not yet applied to the store, one JSON line each (see :mod:`triage.spool`).

    Appends are fsynced before the caller acknowledges Slack; the server and flow runs share the
    file (a lock file keeps them from interleaving; it is held only for the file operations, never
    while waiting for the database, so appending stays fast while the store is busy).
    """

    def __init__(self, path: Path) -> None:
        """Use ``path`` (created on first append)."""
        self.path = path
        self._file = JsonlSpool(path, shared=True)

    def append(self, decisions: Sequence[Decision]) -> None:
        """Durably append decisions (written and fsynced when this returns)."""
        data = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in decisions)
        with self._file.locked():
            self._file.append(data.encode("utf-8"))

    def read(self) -> list[Decision]:
        """Return every spooled decision, oldest first.

        A torn last line (a crash mid-append, never acknowledged to Slack) is moved to
        ``<spool>.rejected`` with the reason instead of blocking the spool forever.
        """
        with self._file.locked():
            good: list[Decision] = []
            kept: list[str] = []
            bad: list[str] = []
            for line in self._file.lines():
                try:
                    good.append(Decision(**json.loads(line)))
                    kept.append(line)
                except (ValueError, TypeError) as exc:
                    bad.append(json.dumps({"reason": str(exc)[:200], "line": line[:10_000]}))
            if bad:
                rejected = self.path.with_name(self.path.name + ".rejected")
                with open(rejected, "a", encoding="utf-8") as fh:
                    fh.write("\n".join(bad) + "\n")
                self._file.rewrite(kept)
            return good

    def remove(self, decision_ids: set[str]) -> None:
        """Drop applied decisions; anything appended meanwhile is kept."""
        if not decision_ids:
            return
        with self._file.locked():
            if not self.path.exists():
                return
            keep = []
            for line in self._file.lines():
                try:
                    if json.loads(line).get("decision_id") in decision_ids:
                        continue
                except ValueError:
                    pass  # read() will move it aside next time
                keep.append(line)
            self._file.rewrite(keep)

    def __len__(self) -> int:
        """How many decisions wait in the spool."""
        return len(self.read())
