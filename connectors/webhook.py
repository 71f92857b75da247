"""Web-form posts received by ``triage intake serve``, read from its append-only spool files.

The intake server appends fsynced lines to ``intake-YYYYMMDD.jsonl``; this source reads them with
the file connector's offset cursor, so a post is read once, a torn last line waits (or goes to
quarantine once it is followed by newer lines) and odd records are quarantined with the reason.

On a server store (PostgreSQL) the intake writes each post directly instead, as the item this
source would have read from its spooled line (:func:`post_batch`: the same id, fields and
quarantine reason); the spool is then the fallback for when the database is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import pyarrow as pa

from connectors import file, file_reader
from connectors.base import ConnectorError, FetchBatch, SourceContext
from triage.config import ConfigError

SETTINGS = {
    "spool_dir": "the intake server's --spool-dir, relative to the config file (required)",
    "source_type": "source_type of the posts (default web_form)",
    "max_record_bytes": "longer spool lines are quarantined unread (default 1048576)",
}

PATTERN = "intake-*.jsonl"


def _file_settings(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": settings.get("spool_dir"),
        "pattern": PATTERN,
        "source_type": settings.get("source_type", "web_form"),
    }
    if "max_record_bytes" in settings:
        out["max_record_bytes"] = settings["max_record_bytes"]
    return out


def _file_ctx(ctx: SourceContext) -> SourceContext:
    ctx.require("spool_dir")
    return replace(ctx, settings=_file_settings(ctx.settings))


def validate(name: str, settings: dict[str, Any]) -> None:
    """Check the settings' values at configuration load."""
    if settings.get("spool_dir") in (None, ""):
        raise ConfigError(f"source '{name}': setting 'spool_dir' is required")
    file.record_format(name, _file_settings(settings))


def reread(ctx: SourceContext, rows: list[dict[str, Any]]) -> tuple[pa.Table | None, list[str]]:
    """Validate quarantined posts again from their saved copies (``triage quarantine retry``)."""
    return file.reread(_file_ctx(ctx), rows)


def sample(ctx: SourceContext, limit: int = file.SAMPLE_SIZE) -> FetchBatch:
    """Parse the first ``limit`` spooled posts, storing nothing (``triage sources check``)."""
    if not ctx.path("spool_dir").is_dir():
        return FetchBatch()
    return file.sample(_file_ctx(ctx), limit)


def check(ctx: SourceContext) -> str:
    """Check the spool folder and count its files."""
    spool = ctx.path("spool_dir")
    if not spool.is_dir():
        raise ConnectorError(
            f"source '{ctx.name}': spool folder {spool} does not exist (start `triage intake "
            f"serve --spool-dir {spool}`; it creates the folder)"
        )
    files = sorted(spool.glob(PATTERN))
    return f"{len(files)} spool file(s) in {spool}"


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Read posts appended to the spool since ``cursor`` (the file connector's cursor).

    Args:
        ctx: The configured source.
        cursor: ``{"files": {name: {"offset", "size"}}}`` or None.

    Yields:
        Batches of posts; quarantined records carry the file, line and reason.
    """
    if not ctx.path("spool_dir").is_dir():
        # Nothing received yet: the server creates the folder with its first start.
        return
    yield from file.fetch(_file_ctx(ctx), cursor)


def max_record_bytes(ctx: SourceContext) -> int:
    """The longest spool line this source reads (longer ones it quarantines unread)."""
    return file.record_format(ctx.name, _file_settings(ctx.settings)).max_record_bytes


def post_batch(ctx: SourceContext, line: bytes, received: datetime, record_id: str) -> FetchBatch:
    """The batch this source would read from one spool line: what the intake stores directly.

    Args:
        ctx: The configured ``webhook`` source (its ``source_type`` and ``max_record_bytes``).
        line: The post as the intake would spool it (one JSON line, newline included).
        received: When the intake accepted it (the item's ``fetched_at``).
        record_id: The post's id, naming it in a quarantine reason where a file names its line.

    Returns:
        The item row (id ``item_id(<source name>, <post id>)``, the same as from the spool), or the
        quarantine row with the reason the source would give.
    """
    fmt = file.record_format(ctx.name, _file_settings(ctx.settings))
    return file_reader.line_batch(ctx, fmt, line, received, f"intake post {record_id}")
