"""``triage config``: check a configuration file and print the JSON Schema editors use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from triage.cli.options import ConfigOpt, load_config_or_exit, writable_or_exit

config_app = typer.Typer(no_args_is_help=True, help="Check the configuration; its JSON Schema.")

# Committed beside the package, so editors can point at it (see README, Configuration).
SCHEMA_FILE = Path(__file__).parents[1] / "config.schema.json"


def schema_text() -> str:
    """The JSON Schema of the configuration file, as committed in ``triage/config.schema.json``."""
    from flows.settings import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


@config_app.command("check")
def check(config: ConfigOpt = None) -> None:
    """Validate the configuration; exit 2 naming the file, line and key of each problem."""
    from triage.store import location

    cfg = load_config_or_exit(config)
    enabled = sum(s.enabled for s in cfg.sources)
    typer.echo(
        f"{cfg.path}: OK ({len(cfg.sources)} sources, {enabled} enabled; "
        f"{len(cfg.destinations)} destinations; database {location.shown(cfg.database)})"
    )
    # Valid, but a run would do nothing visible: most likely the wrong file, or one cut short.
    if not enabled:
        typer.secho("warning: no source is enabled: `triage run` fetches nothing", err=True)
    if not cfg.destinations:
        typer.secho("warning: no destination is configured: nothing is delivered", err=True)


@config_app.command("schema")
def schema(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write it to this file, not stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of the configuration file (for editors' completion and checks)."""
    text = schema_text()
    if out is None:
        typer.echo(text, nl=False)
        return
    writable_or_exit(out)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)
