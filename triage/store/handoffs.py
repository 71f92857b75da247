"""Department handoffs: what each created or joined, thread notes, feature groups, testimonials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triage.store.base import StoreBase


class HandoffSection(StoreBase):
    """The handoff destinations' own records."""

    def handoff_ref(self, key: str) -> dict[str, Any] | None:
        """Return what a handoff delivery created or joined at its destination, if recorded."""
        return self._one("SELECT * FROM handoff_refs WHERE key = ?", [key])

    def begin_handoff(
        self,
        key: str,
        item_id: str,
        destination: str,
        system: str,
        action: str,
        *,
        target_id: str | None = None,
        url: str | None = None,
        author_key: str | None = None,
    ) -> None:
        """Record that a handoff is about to be attempted (and, for a join, what it joins)."""
        row = {
            "key": key,
            "item_id": item_id,
            "destination": destination,
            "system": system,
            "action": action,
            "target_id": target_id,
            "url": url,
            "author_key": author_key,
            "state": "attempted",
        }
        self._insert(
            "handoff_refs",
            [row],
            conflict="(key) DO UPDATE SET action = excluded.action, "
            "target_id = excluded.target_id, url = excluded.url",
        )

    def finish_handoff(
        self, key: str, target_id: str | None, url: str | None, note: bool = False
    ) -> None:
        """Record the confirmed target (ticket, issue, note) of a handoff; optionally queue its note."""
        self._execute(
            "UPDATE handoff_refs SET state = 'done', target_id = ?, url = ?, done_at = now(), "
            "note_state = CASE WHEN ? AND note_state = 'none' THEN 'pending' ELSE note_state END "
            "WHERE key = ?",
            [target_id, url, note, key],
        )

    def recent_tickets(
        self, destination: str, author_key: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """An author's tickets whose items were written between ``since`` and ``until``, newest first."""
        return self._rows(
            "SELECT h.target_id, h.url, i.text, i.created_at FROM handoff_refs h "
            "JOIN items i ON i.id = h.item_id WHERE h.destination = ? AND h.author_key = ? "
            "AND h.state = 'done' AND i.created_at BETWEEN ? AND ? ORDER BY i.created_at DESC",
            [destination, author_key, since, until],
        )

    def pending_notes(self) -> list[dict[str, Any]]:
        """Handoffs whose Slack thread note has not been confirmed yet."""
        return self._rows(
            "SELECT key, item_id, destination, system, action, target_id, url, note_state "
            "FROM handoff_refs WHERE note_state IN ('pending', 'sending') ORDER BY done_at"
        )

    def set_note_state(self, key: str, state: str, ref: str | None = None) -> None:
        """Move a thread note along pending -> sending -> posted (or skipped)."""
        self._execute(
            "UPDATE handoff_refs SET note_state = ?, note_ref = coalesce(?, note_ref) WHERE key = ?",
            [state, ref, key],
        )

    def review_ref(self, item_id: str) -> tuple[str, str | None] | None:
        """The state and reference (``channel:ts`` once sent) of the item's review message."""
        row = self._one(
            "SELECT state, external_ref FROM outbox WHERE item_id = ? AND kind = 'review' "
            "ORDER BY (state = 'sent') DESC, created_at LIMIT 1",
            [item_id],
        )
        if row is None:
            return None
        ref = row["external_ref"]
        return str(row["state"]), None if ref is None else str(ref)

    def feature_signatures(self, destination: str) -> list[tuple[str, str]]:
        """``(group_id, signature)`` of every mention folded into a tracker's groups."""
        rows = self._rows(
            "SELECT m.group_id, m.signature FROM feature_mentions m "
            "JOIN feature_groups g ON g.id = m.group_id WHERE g.destination = ? "
            "ORDER BY m.added_at, m.key",
            [destination],
        )
        return [(str(r["group_id"]), str(r["signature"])) for r in rows]

    def feature_group(self, group_id: str) -> dict[str, Any] | None:
        """One feature-request group."""
        return self._one("SELECT * FROM feature_groups WHERE id = ?", [group_id])

    def feature_mention(self, key: str) -> dict[str, Any] | None:
        """The group a handoff's item was folded into, if it was."""
        return self._one("SELECT * FROM feature_mentions WHERE key = ?", [key])

    def add_feature_mention(
        self,
        key: str,
        item_id: str,
        similarity: float,
        group_id: str,
        new_group: dict[str, Any] | None = None,
        signature: str = "",
    ) -> None:
        """Fold an item into a group (creating the group first when given), counting it once."""
        mention = {
            "key": key,
            "item_id": item_id,
            "group_id": group_id,
            "similarity": similarity,
            "signature": signature,
        }
        with self.transaction():
            if new_group is not None:
                self._insert("feature_groups", [new_group])
            if self._insert("feature_mentions", [mention]):
                self._execute(
                    "UPDATE feature_groups SET mentions = mentions + 1, updated_at = now() "
                    "WHERE id = ?",
                    [group_id],
                )

    def set_group_issue(self, group_id: str, number: int, url: str) -> None:
        """Remember the tracker issue of a group."""
        self._execute(
            "UPDATE feature_groups SET issue_number = ?, issue_url = ?, updated_at = now() "
            "WHERE id = ?",
            [number, url, group_id],
        )

    def group_mentions(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The mentions of a group, oldest first, with what the issue body lists about each."""
        return self._rows(
            "SELECT m.key, i.source, i.url, i.author_handle, i.text, i.created_at "
            "FROM feature_mentions m JOIN items i ON i.id = m.item_id WHERE m.group_id = ? "
            "ORDER BY m.added_at, m.key LIMIT ?",
            [group_id, limit],
        )

    def add_testimonial(self, row: dict[str, Any]) -> int:
        """Keep a kudos item as a testimonial; the same item twice is kept once."""
        return self._insert("testimonials", [row])

    def praise_history(self, author_key: str) -> dict[str, Any]:
        """How often an author has praised us: ``count``, ``first`` and ``last``."""
        row = self._one(
            "SELECT count(*) AS count, min(said_at) AS first, max(said_at) AS last "
            "FROM testimonials WHERE author_key = ?",
            [author_key],
        )
        if not row:
            return {"count": 0, "first": None, "last": None}
        return {"count": int(row["count"]), "first": row["first"], "last": row["last"]}

    def testimonials(self) -> list[dict[str, Any]]:
        """Every testimonial with its author's praise history, newest first."""
        return self._rows(
            "SELECT t.said_at, t.source, t.author_handle, t.author_name, t.author_url, t.url, "
            "t.text, t.score, a.praise_count, a.first_praise, a.last_praise "
            "FROM testimonials t JOIN (SELECT author_key, count(*) AS praise_count, "
            "min(said_at) AS first_praise, max(said_at) AS last_praise FROM testimonials "
            "GROUP BY author_key) a USING (author_key) ORDER BY t.said_at DESC, t.item_id"
        )
