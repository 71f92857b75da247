"""Erasure: remove or anonymise everything about one person (``triage forget``).

Given a handle (``@jane``, ``jane``) or an e-mail address, :func:`forget`:

1. finds the person's items (author handle, or a profile URL ending in the handle);
2. lists the deliveries already made of them (Slack messages, tickets, CRM notes, issues,
   previews), so the team can follow up in those tools;
3. deletes or anonymises their rows in every table of
   :data:`~triage.privacy.registry.PERSONAL_TABLES` (by item, or by author key), then replaces
   any remaining mention of the handle or address elsewhere (another author's text, a quarantined
   record, a feature group titled by their request) with ``[erased]``;
4. deletes the outbox previews of their deliveries and scrubs the handle, address and their
   texts from the other preview files;
5. records the erasure (counts and deliveries, never the data) in ``erasures``.

All database changes are one transaction; ``dry_run`` rolls it back and touches no file. The
caller then rewrites the database file (:func:`triage.store.duckdb.compact`), because a deleted
row's bytes may otherwise survive in the file's free blocks.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from triage.config import Config
from triage.keys import stable_key
from triage.privacy.registry import ERASED, PERSONAL_TABLES
from triage.store import Store

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A bare handle shorter than this is not searched for inside other texts ("jo" is in "join").
MIN_BARE = 5


@dataclass(slots=True)
class ErasureReport:
    """What :func:`forget` found and removed."""

    dry_run: bool
    items: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    anonymised: dict[str, int] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    previews_deleted: int = 0
    previews_scrubbed: int = 0
    erasure_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json``."""
        return asdict(self)


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def identifiers(author: str) -> tuple[list[str], list[str], list[str]]:
    """``(handles, url_suffixes, needles)`` for a handle or e-mail address, lower case.

    ``handles`` match the stored author handle exactly (with and without the leading ``@``);
    ``url_suffixes`` match the end of a profile URL; ``needles`` are searched inside other text.

    Raises:
        ValueError: The value is empty or too short to identify anyone.
    """
    value = author.strip().lower()
    bare = value.lstrip("@")
    if len(bare) < 2:
        raise ValueError(f"--author {author!r} is too short to identify a person")
    if _EMAIL.match(bare):
        # An address, or a fediverse handle (user@instance), which sources store with or
        # without its leading '@' and whose profile is https://instance/@user: as an address
        # alone, "@user@instance" matched nobody, and the erasure was recorded all the same.
        user, _, host = bare.partition("@")
        handles = [bare, f"@{bare}", f"mailto:{bare}"]
        return handles, [f":{bare}", f"{host}/@{user}", f"{host}/@{user}/"], [bare]
    handles = [bare, f"@{bare}"]
    needles = [f"@{bare}"] + ([bare] if len(bare) >= MIN_BARE else [])
    return handles, [f"/{bare}", f"/@{bare}", f"/{bare}/", f"/@{bare}/"], needles


def identity_patterns(author: str) -> list[str]:
    """SQL ``LIKE`` patterns of the person's customer identity keys (issue 16's profiles).

    ``email:<address>``, or ``handle:<platform>:<handle>`` on any platform, alone in a column or
    inside a JSON list.
    """
    bare = author.strip().lower().lstrip("@")
    escaped = bare.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    handle = [f"handle:%:{escaped}", f'%"handle:%:{escaped}"%']
    if _EMAIL.match(bare):
        # As an address, and as the fediverse handle it may be.
        return [f"email:{escaped}", f'%"email:{escaped}"%', *handle]
    return handle


def _author_keys(rows: list[dict[str, Any]]) -> list[str]:
    # The keys destinations stored (testimonials, tickets): as DeliveryItem.author_key builds
    # them, and the pseudonym used where the author was redacted.
    keys: set[str] = set()
    for r in rows:
        who = r.get("author_handle") or r.get("author_name") or "anonymous"
        key = (
            str(r["author_url"]).strip().lower()
            if r.get("author_url")
            else f"{r['source']}:{who}".strip().lower()
        )
        keys.update({key, "anon:" + stable_key(key)[:20]})
    return sorted(keys)


def forget(store: Store, config: Config, author: str, *, dry_run: bool = False) -> ErasureReport:
    """Erase one person from the store and the outbox previews; see the module docstring.

    Args:
        store: The open store.
        config: The configuration (outbox folder).
        author: Their handle or e-mail address.
        dry_run: Report what would be removed; change nothing.

    Returns:
        The report (also recorded in ``erasures`` unless ``dry_run``).
    """
    handles, suffixes, needles = identifiers(author)
    report = ErasureReport(dry_run=dry_run)
    try:
        with store.transaction():
            rows = store.person_items(handles, suffixes)
            ids = [str(r["id"]) for r in rows]
            texts = [str(r["text"]) for r in rows]
            report.items = len(ids)
            for r in rows:
                report.by_source[str(r["source"])] = report.by_source.get(str(r["source"]), 0) + 1
            deliveries = store.deliveries_of(ids)
            report.deliveries = [
                {k: d[k] for k in ("destination", "kind", "state", "external_ref", "sent_at")}
                for d in deliveries
                if d["state"] in ("sent", "previewed", "sending")
            ]
            keys = _author_keys(rows) + handles
            # A feature group is titled by its first request: theirs, the title goes too.
            titled = store.blank_group_titles(ids)
            if titled:
                report.anonymised["feature_groups"] = titled
            patterns = identity_patterns(author)
            for entry in PERSONAL_TABLES:
                n = store.erase_linked(entry, ids, keys, patterns)
                if n:
                    report.removed[entry.table] = n
            for entry in PERSONAL_TABLES:
                n = store.scrub(entry, needles, texts)
                if n:
                    report.anonymised[entry.table] = report.anonymised.get(entry.table, 0) + n
            if not dry_run:
                report.erasure_id = uuid.uuid4().hex
                store.record_erasure(
                    {
                        "id": report.erasure_id,
                        "erased_at": datetime.now(UTC),
                        "requested_by": _operator(),
                        "items": report.items,
                        "removed": {
                            **report.removed,
                            **{f"{t} (anonymised)": n for t, n in report.anonymised.items()},
                        },
                        "deliveries": report.deliveries,
                    }
                )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    outbox_keys = {str(d["key"]) for d in deliveries}
    report.previews_deleted, report.previews_scrubbed = _previews(
        config.outbox_dir, outbox_keys, needles, texts, dry_run
    )
    return report


def _operator() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _preview_files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(folder.rglob("*.json"))


def _scrubbed(value: Any, needles: list[str], texts: list[str]) -> Any:
    if isinstance(value, str):
        for text in texts:
            if len(text) >= 12 and text in value:
                value = value.replace(text, ERASED)
        for needle in needles:
            value = re.sub(re.escape(needle), ERASED, value, flags=re.IGNORECASE)
        return value
    if isinstance(value, list):
        return [_scrubbed(v, needles, texts) for v in value]
    if isinstance(value, dict):
        return {k: _scrubbed(v, needles, texts) for k, v in value.items()}
    return value


def _previews(
    folder: Path, keys: set[str], needles: list[str], texts: list[str], dry_run: bool
) -> tuple[int, int]:
    """Delete the previews of the person's deliveries; scrub them from the other files."""
    deleted = scrubbed = 0
    for path in _preview_files(folder):
        stem = path.stem.removeprefix("dead-")
        if stem in keys:
            deleted += 1
            if not dry_run:
                path.unlink()
            continue
        raw = path.read_text(encoding="utf-8")
        low = raw.lower()
        if not any(n in low for n in needles) and not any(t in raw for t in texts if t):
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        clean = _scrubbed(doc, needles, [t for t in texts if t])
        if clean != doc:
            scrubbed += 1
            if not dry_run:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(clean, indent=2, ensure_ascii=False), encoding="utf-8")
                os.replace(tmp, path)
    return deleted, scrubbed
