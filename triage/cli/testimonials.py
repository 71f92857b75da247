"""``triage testimonials``: the kudos kept for marketing, exported as CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from triage.cli.options import writable_or_exit

testimonials_app = typer.Typer(no_args_is_help=True, help="Testimonials and advocates (kudos).")

COLUMNS = (
    "said_at",
    "source",
    "author_handle",
    "author_name",
    "author_url",
    "url",
    "text",
    "score",
    "praise_count",
    "first_praise",
    "last_praise",
)


def csv_safe(value: Any) -> str:
    """A cell that a spreadsheet shows as text: public text starting with = + - @ is not a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@testimonials_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.")],
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Configuration file.")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="DuckDB file.")] = None,
) -> None:
    """Write every testimonial with its author's praise history (count, first, last) to CSV."""
    from flows.settings import load_config
    from triage.store import location, open_store

    cfg = load_config(config, database=db)
    if not location.exists(cfg.database):
        typer.secho(f"error: no database at {cfg.database} yet", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    writable_or_exit(out)
    # Writable, so a database from before the testimonials table gets its migration first.
    with open_store(cfg.database) as store:
        rows = store.testimonials()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([csv_safe(row[c]) for c in COLUMNS])
    typer.echo(f"wrote {len(rows)} testimonials to {out}")
