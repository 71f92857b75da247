"""``triage report`` (a page marketing can read) and ``triage digest`` (the weekly Slack digest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triage.cli.options import (
    ConfigOpt,
    DbOpt,
    fail,
    load_config_or_exit,
    store_or_exit,
    writable_or_exit,
)


def _period(text: str | None, default: object) -> object:
    from triage.config import parse_duration

    if text is None:
        return default
    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"--since: {exc}", 2)


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write index.html into.")],
    since: Annotated[
        str | None,
        typer.Option("--since", help="Period covered, e.g. 30d (default: customers.report_since)."),
    ] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Write a self-contained HTML report with PNG charts and the CSV behind each chart."""
    from triage.report.publish import make_report

    cfg = load_config_or_exit(config, db)
    period = _period(since, cfg.customers.report_since)
    writable_or_exit(out, folder=True)
    with store_or_exit(cfg, read_only=True) as store:
        result = make_report(store, cfg, out, since=period)  # type: ignore[arg-type]
    typer.echo(
        f"wrote {result.index} ({len(result.charts)} charts, each with its CSV); "
        "open it in a browser"
    )


def digest(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the preview under the outbox; post nothing.")
    ] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Post the weekly digest to the configured channel (a preview when no token is set)."""
    from slack_sdk.errors import SlackApiError

    from triage.report.publish import PreviewNotWritten, send_digest

    cfg = load_config_or_exit(config, db)
    if not cfg.customers.digest_destination:
        fail("no digest destination: set customers.digest.destination in the configuration", 2)
    with store_or_exit(cfg, read_only=True) as store:
        try:
            result = send_digest(store, cfg, dry_run=dry_run)
        except SlackApiError as exc:
            fail(f"the digest was not posted: {exc.response.get('error')}", 1)
            return
        except PreviewNotWritten as exc:
            fail(str(exc), 2)
            return
    if result.preview is not None:
        why = "--dry-run" if dry_run else "no Slack token configured"
        typer.echo(f"{why}: wrote the digest preview to {result.preview} (nothing posted)")
        return
    typer.echo(
        f"posted the digest to {result.channel} ({result.posted}); charts uploaded "
        f"{result.uploaded}"
        + (f", failed {', '.join(result.failed_uploads)}" if result.failed_uploads else "")
    )
