"""Web-form posts received by ``triage intake serve``, read from its append-only spool files.

The intake server only appends fsynced lines to ``intake-YYYYMMDD.jsonl``; this source reads them
with the file connector's offset cursor, so a post is read once, a torn last line waits (or goes to
quarantine once it is followed by newer lines) and odd records are quarantined with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from connectors import file
from connectors.base import ConnectorError, FetchBatch, SourceContext

SETTINGS = {
    "spool_dir": "the intake server's --spool-dir, relative to the config file (required)",
    "source_type": "source_type of the posts (default web_form)",
}

PATTERN = "intake-*.jsonl"


def _file_ctx(ctx: SourceContext) -> SourceContext:
    settings: dict[str, Any] = {
        "path": ctx.require("spool_dir"),
        "pattern": PATTERN,
        "source_type": ctx.settings.get("source_type", "web_form"),
    }
    return replace(ctx, settings=settings)


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
