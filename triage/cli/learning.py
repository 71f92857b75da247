"""``triage corrections import``, ``triage retrain`` and ``triage models``: the learning loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from triage.cli.options import ConfigOpt, DbOpt, fail, load_config_or_exit, store_or_exit
from triage.cli.slack import corrections_app

models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, promote, roll back.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


@corrections_app.command("import")
def corrections_import(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV (header text,label[,source]) or JSONL.")
    ],
    source: Annotated[
        str, typer.Option(help="Source of rows that name none (for the evaluation slice).")
    ] = "import",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Import corrections from another tool; the latest correction of a text wins.

    Bad rows are reported by line and skipped. Exit codes: 0 imported (even partly), 1 no row
    was usable, 2 the file cannot be read (missing, no text/label column, not UTF-8).
    """
    from classifiers.correction_files import CorrectionsFileError
    from flows.learning import import_corrections
    from triage.store import StoreError

    cfg = load_config_or_exit(config, db)
    try:
        report = import_corrections(cfg, input, default_source=source)
    except CorrectionsFileError as exc:
        fail(str(exc), 2)
        return
    except StoreError as exc:
        fail(str(exc), exc.exit_code)
        return
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        typer.echo(f"{input}: {report.summary()}")
        for err in report.errors[:20]:
            typer.echo(f"  {err}", err=True)
        if len(report.errors) > 20:
            typer.echo(f"  ... and {len(report.errors) - 20} more rejected rows", err=True)
    if report.read and report.rejected == report.read:
        raise typer.Exit(1)


def retrain(
    as_json: JsonOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Train and judge, but do not promote.")
    ] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Train a challenger from the starter corpus and every correction; promote it if better.

    Prints the comparison of champion and challenger on the same slices (with --json one
    object: promoted, reason, champion, challenger, checks, data). Progress goes to stderr.
    Exit 0 whether or not the challenger was promoted; 2 when the store or registry is unusable.
    """
    from classifiers.registry import RegistryError
    from classifiers.retrain import render
    from flows.learning import run_retrain, stored_corrections
    from triage.store import location

    cfg = load_config_or_exit(config, db)
    if not location.exists(cfg.database):
        fail(f"no database at {cfg.database} yet; run `triage run` or `triage corrections import`")
    # Read through store_or_exit like every other command: TRIAGE_LOCK_WAIT applies, and a store
    # that a run holds is "busy, try again" (exit 1), not a problem to fix (exit 2).
    with store_or_exit(cfg) as store:
        corrections = stored_corrections(store, cfg)
    try:
        decision = run_retrain(cfg, promote=not dry_run, log=_echo_err, corrections=corrections)
    except RegistryError as exc:
        fail(str(exc), 2)
        return
    typer.echo(json.dumps(decision.to_json(), indent=2) if as_json else render(decision))


@models_app.command("list")
def models_list(as_json: JsonOpt = False, config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Every registered model (newest first) and the shipped one, the active one marked."""
    from flows.learning import registry_for, version_rows

    registry = registry_for(load_config_or_exit(config, db))
    rows = version_rows(registry)
    if as_json:
        typer.echo(json.dumps({"registry": str(registry.root), "models": rows}, indent=2))
        return
    typer.echo(f"registry {registry.root}")
    for r in rows:
        mark = "*" if r["active"] else " "
        metrics = r["metrics"].get("corrections") or {}
        score = f"slice macro-F1 {metrics['macro_f1']:.3f}" if "macro_f1" in metrics else ""
        data = r["data"]
        counts = (
            f"corrections {data.get('corrections', 0)} (eval slice {data.get('eval_slice', 0)})"
            if data
            else ""
        )
        gate = r["decision"].get("gate_passed")
        verdict = "" if gate is None else ("gate passed" if gate else "gate refused")
        fields = [f for f in (r["created_at"] or "", counts, score, verdict) if f]
        typer.echo(f"{mark} {r['version']:<28} " + "  ".join(fields))


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="A version from `triage models list`.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Make VERSION the active model (by hand; the gate is not consulted)."""
    from classifiers.registry import RegistryError
    from flows.learning import registry_for

    registry = registry_for(load_config_or_exit(config, db))
    try:
        registry.promote(version, reason="promoted by hand", by="cli")
    except RegistryError as exc:
        fail(str(exc), 2)
    typer.echo(f"active model: {version}")


@models_app.command("rollback")
def models_rollback(config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Go back to the model that was active before the last promotion (at the start: shipped)."""
    from classifiers.registry import RegistryError
    from flows.learning import describe_active, registry_for

    registry = registry_for(load_config_or_exit(config, db))
    try:
        active = registry.rollback(reason="rolled back by hand", by="cli")
    except RegistryError as exc:
        fail(str(exc), 1)
        return
    typer.echo(f"active model: {describe_active(active)}")
