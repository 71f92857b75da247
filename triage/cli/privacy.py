"""``triage forget``: erase one person (README, "Privacy")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer

from triage.cli.options import ConfigOpt, DbOpt, fail, load_config_or_exit, store_or_exit


def _lines(title: str, counts: dict[str, int]) -> str:
    return f"{title}: " + (", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "nothing")


def forget(
    author: Annotated[
        str, typer.Option("--author", help="Their handle (@jane or jane) or e-mail address.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")
    ] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Remove or anonymise everything about one person; list deliveries to follow up elsewhere.

    Their items, predictions, review decisions, training examples, testimonials, handoff
    records and outbox previews are deleted; mentions of their handle or address elsewhere
    become [erased]. The erasure is recorded (counts, not data) in the `erasures` table, and the
    database file is rewritten so no deleted bytes remain in it.
    """
    from triage.privacy.erasure import forget as erase
    from triage.privacy.erasure import identifiers
    from triage.store.duckdb import compact

    try:
        identifiers(author)
    except ValueError as exc:
        fail(str(exc), 2)
    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg, must_exist=True) as store:
        report = erase(store, cfg, author, dry_run=dry_run)
    # A PostgreSQL store reclaims deleted rows' space with (auto)vacuum; only a file is rewritten.
    if not dry_run and isinstance(cfg.database, Path):
        # Deleted rows may survive as bytes in the file's free blocks until it is rewritten.
        # Always, so running the command again finishes a rewrite that could not run.
        try:
            compact(cfg.database)
        except duckdb.Error as exc:
            fail(
                f"the erasure is done and recorded, but {cfg.database} could not be rewritten "
                f"({exc}); run the same command again when no other process uses the store",
                1,
            )
    result: dict[str, Any] = report.as_dict()
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    verb = "would remove" if dry_run else "removed"
    sources = ", ".join(f"{s} {n}" for s, n in sorted(report.by_source.items()))
    typer.echo(f"{verb} {report.items} items" + (f" ({sources})" if sources else ""))
    if not report.items:
        # Most often a spelling the sources do not use: said, so nobody takes the recorded
        # erasure for a done one.
        typer.secho(
            f"warning: no stored item is by {author!r}; check how the source writes the handle "
            "or address (`triage status` lists sources; a dry run shows what would match)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(_lines(f"rows {verb}", report.removed))
    # Counted per statement: a row whose text and raw payload both named them counts twice.
    typer.echo(
        _lines("updates anonymising" + (" (would be)" if dry_run else ""), report.anonymised)
    )
    typer.echo(
        f"outbox previews: {report.previews_deleted} deleted, "
        f"{report.previews_scrubbed} scrubbed" + (" (would be)" if dry_run else "")
    )
    if report.deliveries:
        typer.echo(
            f"{len(report.deliveries)} deliveries were already made; follow up in those tools:"
        )
        for d in report.deliveries:
            typer.echo(
                f"  {d['destination']} ({d['kind']}, {d['state']}): {d['external_ref'] or '-'}"
            )
    else:
        typer.echo("no deliveries had been made")
    if report.erasure_id:
        typer.echo(f"recorded as erasure {report.erasure_id}")
