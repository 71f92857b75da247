"""Options and error exit shared by the ``triage`` sub-command modules."""

from __future__ import annotations

from typing import Annotated

import typer

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="Configuration file (default: TRIAGE_CONFIG, ./triage.yaml, demo)."
    ),
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="DuckDB file (default: TRIAGE_DB or the config's).")
]


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
