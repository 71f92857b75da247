"""Privacy: erasure of one person's rows, retention expiry, and their audit records.

The tables come from :data:`triage.privacy.registry.PERSONAL_TABLES`; a registered table that
does not exist (yet) in this database is skipped. Every statement is portable SQL
(``information_schema``, ``lower``, ``strpos``, ``replace``) so a server backend runs it as is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from triage.privacy.registry import ERASED, PersonalTable
from triage.store.base import StoreBase, chunks, marks


class PrivacySection(StoreBase):
    """What ``triage forget`` and the retention pass run."""

    def _columns(self, table: str) -> dict[str, bool]:
        """The table's columns and whether each may be NULL ({} when there is no such table)."""
        rows = self._rows(
            "SELECT column_name AS c, is_nullable AS n FROM information_schema.columns "
            "WHERE table_name = ?",
            [table],
        )
        return {str(r["c"]): str(r["n"]).upper().startswith("Y") for r in rows}

    def _blank_set(self, entry: PersonalTable, nullable: dict[str, bool]) -> str:
        """``SET`` clause that blanks the entry's text and author details in place."""
        parts = [f"{c} = '{ERASED}'" for c in entry.text_columns if c in nullable]
        for col in (*entry.author_columns, *entry.detail_columns):
            if col in nullable:
                parts.append(f"{col} = NULL" if nullable[col] else f"{col} = '{ERASED}'")
        return ", ".join(parts)

    # ------------------------------------------------------------ erasure
    def person_items(
        self, handles: Sequence[str], url_suffixes: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Items whose author handle is one of ``handles`` or whose profile URL ends in a suffix.

        Args:
            handles: Lower-case handles or e-mail addresses, as the sources store them.
            url_suffixes: Lower-case endings of a profile URL (``/@jane``, ``/jane``).
        """
        if not handles:
            return []
        url_cond = " OR ".join("lower(author_url) LIKE ?" for _ in url_suffixes)
        params = [*handles, *(f"%{s}" for s in url_suffixes)]
        return self._rows(
            "SELECT id, source, text, author_handle, author_name, author_url FROM items "
            f"WHERE lower(author_handle) IN ({marks(handles)})"
            + (f" OR {url_cond}" if url_cond else ""),
            params,
        )

    def deliveries_of(self, item_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every outbox delivery of the items (keys included), oldest first."""
        out: list[dict[str, Any]] = []
        for chunk in chunks(item_ids):
            out += self._rows(
                "SELECT key, item_id, destination, kind, state, external_ref, sent_at FROM outbox "
                f"WHERE item_id IN ({marks(chunk)}) ORDER BY created_at, key",
                chunk,
            )
        return out

    def erase_linked(
        self,
        entry: PersonalTable,
        item_ids: Sequence[str],
        keys: Sequence[str],
        identity_patterns: Sequence[str] = (),
    ) -> int:
        """Delete (or blank) the entry's rows of the person: by item, author key or identity.

        ``identity_patterns`` are SQL ``LIKE`` patterns of their customer identity keys.

        Returns:
            How many rows were removed or blanked.
        """
        cols = self._columns(entry.table)
        if not cols:
            return 0
        conds: list[tuple[str, list[str]]] = []
        for chunk in chunks(item_ids):
            if entry.item_column and entry.item_column in cols:
                conds.append((f"{entry.item_column} IN ({marks(chunk)})", chunk))
        for chunk in chunks(keys):
            for col in entry.key_columns:
                if col in cols:
                    conds.append((f"lower({col}) IN ({marks(chunk)})", chunk))
        for col in entry.identity_columns:
            if col in cols:
                for pattern in identity_patterns:
                    conds.append((f"lower({col}) LIKE ? ESCAPE '\\'", [pattern]))
        total = 0
        for cond, params in conds:
            if entry.erase == "delete":
                total += self._execute(f"DELETE FROM {entry.table} WHERE {cond}", params)
            else:
                blank = self._blank_set(entry, cols)
                if blank:
                    total += self._execute(f"UPDATE {entry.table} SET {blank} WHERE {cond}", params)
        return total

    def scrub(self, entry: PersonalTable, needles: Sequence[str], texts: Sequence[str]) -> int:
        """Anonymise what remains about the person in other rows of the entry's table.

        A text column mentioning one of ``needles`` (the person's handle or e-mail, lower case)
        has it replaced by ``[erased]``; a text column equal to or part of one of the person's
        own ``texts`` is blanked; an author or detail column containing ``@handle`` or the
        address is nulled.

        Returns:
            How many rows changed.
        """
        cols = self._columns(entry.table)
        changed = 0
        for col in entry.text_columns:
            if col not in cols:
                continue
            for needle in needles:
                # replace() is case-sensitive: the spellings found are replaced one by one,
                # until no spelling of the needle is left.
                for _ in range(20):
                    rows = self._rows(
                        f"SELECT DISTINCT substr({col}, strpos(lower({col}), ?), ?) AS s "
                        f"FROM {entry.table} WHERE strpos(lower({col}), ?) > 0",
                        [needle, len(needle), needle],
                    )
                    if not rows:
                        break
                    for spelling in {str(r["s"]) for r in rows}:
                        changed += self._execute(
                            f"UPDATE {entry.table} SET {col} = replace({col}, ?, '{ERASED}') "
                            f"WHERE strpos({col}, ?) > 0",
                            [spelling, spelling],
                        )
            for text in texts:
                changed += self._execute(
                    f"UPDATE {entry.table} SET {col} = '{ERASED}' "
                    f"WHERE length({col}) >= 12 AND strpos(?, {col}) > 0",
                    [" ".join(text.split())],
                )
        for col in (*entry.author_columns, *entry.detail_columns):
            if col not in cols:
                continue
            value = "NULL" if cols[col] else f"'{ERASED}'"
            # Only "@handle" and addresses here: a bare "jane.doe" is also part of the
            # address "jane.doe@example.org", which may be someone to erase on their own.
            for needle in (n for n in needles if "@" in n):
                changed += self._execute(
                    f"UPDATE {entry.table} SET {col} = {value} WHERE strpos(lower({col}), ?) > 0",
                    [needle],
                )
        return changed

    def blank_group_titles(self, item_ids: Sequence[str]) -> int:
        """Blank title and word signature of feature groups whose first request is one of the items.

        Both are that request's words; the group (its issue, its count) stays.
        """
        changed = 0
        for chunk in chunks(item_ids):
            changed += self._execute(
                f"UPDATE feature_groups SET title = '{ERASED}', signature = '' WHERE id IN ("
                "SELECT m.group_id FROM feature_mentions m "
                f"WHERE m.item_id IN ({marks(chunk)}) AND NOT EXISTS ("
                "SELECT 1 FROM feature_mentions f WHERE f.group_id = m.group_id "
                "AND (f.added_at < m.added_at OR (f.added_at = m.added_at AND f.key < m.key))))",
                chunk,
            )
        return changed

    def record_erasure(self, row: dict[str, Any]) -> None:
        """Keep the audit record of an erasure (counts and deliveries, no personal data)."""
        self._insert(
            "erasures",
            [
                {
                    **row,
                    "removed": json.dumps(row["removed"], sort_keys=True),
                    "deliveries": json.dumps(row["deliveries"], default=str),
                }
            ],
        )

    def erasures(self, limit: int = 50) -> list[dict[str, Any]]:
        """The recorded erasures, the most recent first."""
        return self._rows(
            "SELECT id, erased_at, requested_by, items, removed, deliveries FROM erasures "
            "ORDER BY erased_at DESC LIMIT ?",
            [limit],
        )

    # ------------------------------------------------------------ retention
    def expire(self, entry: PersonalTable, cutoff: datetime, now: datetime) -> int:
        """Blank (or delete) the entry's rows written before ``cutoff``; record the pass.

        Rows already blanked are not counted again.

        Returns:
            How many rows were blanked or deleted.
        """
        cols = self._columns(entry.table)
        if not cols or entry.time_column not in cols:
            return 0
        old = f"{entry.time_column} < ?"
        if entry.expire == "delete":
            n = self._execute(f"DELETE FROM {entry.table} WHERE {old}", [cutoff])
        else:
            blank = self._blank_set(entry, cols)
            live = [f"{c} <> '{ERASED}'" for c in entry.text_columns if c in cols]
            live += [f"{c} IS NOT NULL" for c in entry.author_columns if cols.get(c)]
            live += [f"{c} IS NOT NULL" for c in entry.detail_columns if cols.get(c)]
            pending = " OR ".join(live) or "TRUE"
            n = self._execute(
                f"UPDATE {entry.table} SET {blank} WHERE {old} AND ({pending})", [cutoff]
            )
        self._insert(
            "retention_runs",
            [{"table_name": entry.table, "ran_at": now, "cutoff": cutoff, "row_count": n}],
        )
        return n
