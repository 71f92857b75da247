"""The ``triage`` command line: run the flow, train/classify/evaluate, inspect the store."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

# `triage run` reports wall time from here: imports and the temporary server count, as a user
# waiting at the prompt sees them.
_STARTED = time.monotonic()

from triage.cli_config import config_app
from triage.cli_handoffs import testimonials_app
from triage.cli_intake import intake_app
from triage.cli_options import ConfigOpt, DbOpt, load_config_or_exit, store_or_exit
from triage.cli_options import fail as _fail
from triage.cli_slack import corrections_app, slack_app
from triage.cli_sources import mostly_quarantined, quarantine_app, sources_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="feedback-triage: sort unsolicited feedback and hand it to the team that owns it.",
)
outbox_app = typer.Typer(no_args_is_help=True, help="Inspect and retry queued deliveries.")
app.add_typer(sources_app, name="sources")
app.add_typer(outbox_app, name="outbox")
app.add_typer(slack_app, name="slack")
app.add_typer(corrections_app, name="corrections")
app.add_typer(intake_app, name="intake")
app.add_typer(testimonials_app, name="testimonials")
app.add_typer(config_app, name="config")
app.add_typer(quarantine_app, name="quarantine")


def _quiet_prefect(verbose: bool) -> None:
    # Prefect is chatty by default; a person running `triage run` wants the summary, not the logs.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The temporary server can take a while to boot on a busy machine; waiting beats failing.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if not verbose:
        # Failures reach the summary (a failed source, a failed run); Prefect's own error logs
        # would repeat them as tracebacks. `-v` shows everything.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    for noisy in ("httpx", "httpcore", "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _start_temporary_server() -> float | None:
    """Start Prefect's temporary server now, so its start-up is timed apart from the flow.

    Returns:
        The seconds it took, or None when ``PREFECT_API_URL`` names a server to use instead.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    # The same singleton the Prefect client would start on the flow's first call.
    from prefect.server.api.server import SubprocessASGIServer

    started = time.monotonic()
    SubprocessASGIServer().start()
    return round(time.monotonic() - started, 3)


def _timing(summary: dict[str, Any]) -> str:
    flow_s, server_s = summary["seconds"], summary.get("server_start_seconds")
    if "wall_seconds" not in summary:  # a flow's own summary, not timed by `triage run`
        return f"finished in {flow_s:.1f}s (flow)"
    parts = [f"flow {flow_s:.1f}s"]
    if server_s is not None:
        parts.append(f"Prefect server start {server_s:.1f}s")
    other = summary["wall_seconds"] - flow_s - (server_s or 0)
    parts.append(f"imports and Prefect bookkeeping {max(other, 0):.1f}s")
    return f"finished in {summary['wall_seconds']:.1f}s ({', '.join(parts)})"


def _print_summary(summary: dict[str, Any]) -> None:
    out: list[str] = [f"triage run {_timing(summary)}  (database {summary['database']})"]
    out.append("sources:")
    for name, s in summary["sources"].items():
        out.append(
            f"  {name:<18} fetched {s['fetched']:>6}  new {s['stored']:>6}  quarantined {s['quarantined']:>4}"
        )
    for name, err in summary["failed_sources"].items():
        out.append(f"  {name:<18} FAILED: {err}")
    c = summary["classify"]
    labels = ", ".join(f"{k} {v}" for k, v in c["by_label"].items()) or "nothing new"
    out.append(f"classified {c['classified']} ({labels}); needs review {c['needs_review']}")
    r = summary["route"]
    depts = ", ".join(f"{k} {v}" for k, v in r["by_department"].items()) or "nothing new"
    out.append(f"routed {r['routed']} ({depts}); deliveries queued {r['enqueued']}")
    d = summary.get("deliver")
    if d:
        line = (
            f"delivered: sent {d['sent']}, previews {d['previewed']}, reconciled {d['reconciled']}"
        )
        line += f", failed {d['failed']}, dead-lettered {d['dead']}"
        out.append(line)
        if d["preview_destinations"]:
            out.append(
                f"  no Slack token configured for {', '.join(d['preview_destinations'])}: messages were "
                f"written as JSON previews under {d['outbox_dir']}/ (set SLACK_BOT_TOKEN to post)"
            )
    rv = summary.get("review") or {}
    if rv.get("applied") or rv.get("superseded") or rv.get("busy") or rv.get("error"):
        out.append(
            f"review decisions: applied {rv.get('applied', 0)}, superseded "
            f"{rv.get('superseded', 0)}, still spooled {rv.get('pending', 0)}"
            + (f" ({rv['error']})" if rv.get("error") else "")
        )
    if summary["failed_sources"]:
        failed = ", ".join(summary["failed_sources"])
        out.append(f"FAILED sources: {failed} (the other sources were triaged; exit code 1)")
    typer.echo("\n".join(out))


@app.command()
def run(
    config: ConfigOpt = None,
    db: DbOpt = None,
    no_deliver: Annotated[
        bool, typer.Option("--no-deliver", help="Queue deliveries, send nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every stage and Prefect's logs.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Records per fetch/classify batch.")
    ] = 5000,
) -> None:
    """Run the triage flow once over the configured sources and print a summary.

    Exit codes: 0 all sources fetched, 1 a source or the run failed, 2 a configuration or
    database problem that needs fixing first.
    """
    _quiet_prefect(verbose)
    # Fail fast, before Prefect and spaCy are even imported: the configuration, then the store.
    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg):
        pass
    from flows.triage import run_triage
    from triage.cli_progress import show_progress
    from triage.store import StoreError
    try:
        server_seconds = _start_temporary_server()
        with show_progress(verbose):
            summary = run_triage(
                config_path=str(cfg.path),
                database=str(cfg.database),
                deliver=not no_deliver,
                batch_size=batch_size,
            )
    except StoreError as exc:
        _fail(str(exc), exc.exit_code)
        return
    except Exception as exc:  # noqa: BLE001 - report any failure as one clear line and exit 1
        _fail(f"the triage flow failed: {type(exc).__name__}: {exc}")
        return
    summary["server_start_seconds"] = server_seconds
    summary["wall_seconds"] = round(time.monotonic() - _STARTED, 3)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    loud, too_many = mostly_quarantined(summary)
    for line in loud:
        typer.secho(line, fg=typer.colors.RED, err=True)
    if summary["failed_sources"] or too_many:
        raise typer.Exit(1)


@app.command()
def status(
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the state of the store: items by label, department, review and delivery state."""
    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg, read_only=True) as store:
        result = store.status()
    result["database"] = str(cfg.database)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"database {result['database']} (schema v{result['schema_version']})")
    typer.echo(
        f"items {result['items_total']}, classified {result['classified']}, "
        f"needs review {result['needs_review']}, quarantined {result['quarantined']}"
    )
    for key in ("by_label", "by_department", "by_source", "deliveries"):
        typer.echo(
            f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in result[key].items())
        )


@app.command()
def classify(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV (text column) or JSONL (text field).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    model: Annotated[
        Path | None, typer.Option("--model", help="Model folder (default: shipped).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per nlp.pipe batch.")] = 2000,
    text_column: Annotated[
        str, typer.Option("--text-column", help="CSV column / JSON field with the text.")
    ] = "text",
    id_column: Annotated[
        str, typer.Option("--id-column", help="Column / field copied to the output as 'id'.")
    ] = "id",
) -> None:
    """Classify every row of a file; one JSON object per input row, in input order."""
    from classifiers.cli_io import classify_file

    try:
        counts = classify_file(input, output, model, batch_size, text_column, id_column)
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)
        return
    typer.echo(
        f"classified {counts['ok']} rows, {counts['errors']} row errors -> {output}", err=True
    )


def _config_for(arch: str) -> Path:
    from classifiers.train import CONFIG_DIR

    cfg = CONFIG_DIR / f"textcat_{arch}.cfg"
    if not cfg.exists():
        names = sorted(p.stem.removeprefix("textcat_") for p in CONFIG_DIR.glob("textcat_*.cfg"))
        _fail(f"unknown architecture '{arch}' ({', '.join(names)})", 2)
    return cfg


ARCH_HELP = "Architecture config classifiers/configs/textcat_ARCH.cfg: vectors, bow, cnn, ensemble."


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the trained model to.")],
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="CSV/JSONL files or folders (text, label).")
    ] = None,
    with_starter: Annotated[
        bool, typer.Option("--with-starter", help="Add the shipped starter corpus.")
    ] = False,
    starter_only: Annotated[
        bool, typer.Option("--starter-only", help="Train on the starter corpus only.")
    ] = False,
    arch: Annotated[str, typer.Option(help=ARCH_HELP)] = "vectors",
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the config's).")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Largest epoch count (default: the config's).")
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="Cross-source folds for calibration (default: config's).")
    ] = None,
) -> None:
    """Train a model from labelled CSV/JSONL data and write a loadable spaCy pipeline."""
    from classifiers.data import DataError, load_examples, load_starter
    from classifiers.train import train as run_train

    paths = [str(p) for p in data or []]
    if not paths and not (with_starter or starter_only):
        _fail("give --data PATH (and/or --with-starter), or --starter-only", 2)
    cfg = _config_for(arch)
    try:
        examples = [] if starter_only else load_examples(paths)
        if with_starter or starter_only:
            examples += load_starter()
    except DataError as exc:
        _fail(str(exc), 2)
        return
    if len({ex.label for ex in examples}) < 2:
        _fail("training needs examples of at least two labels", 2)
    run_train(
        examples,
        out,
        config_path=cfg,
        seed=seed,
        epochs=epochs,
        folds=folds,
        data_description={
            "paths": [] if starter_only else [str(Path(p).resolve()) for p in paths],
            "with_starter": with_starter or starter_only,
        },
        log=lambda msg: typer.echo(msg, err=True),
    )


@app.command()
def evaluate(
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="Labelled CSV/JSONL files or folders.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model folder (default: shipped).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    baseline: Annotated[
        bool, typer.Option(help="Also train and score a TF-IDF + LR baseline.")
    ] = True,
    balanced: Annotated[
        int | None, typer.Option(help="Score a label-balanced sample of N per label.")
    ] = None,
    only_labels: Annotated[
        str | None,
        typer.Option(help="Score only rows with these gold labels (comma-separated)."),
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="List the misclassified rows (text, gold, predicted).")
    ] = False,
    report_dir: Annotated[Path, typer.Option(help="Where the confusion-matrix PNG goes.")] = Path(
        "reports"
    ),
    record_as: Annotated[
        str | None, typer.Option("--record", help="Save the result in the model card under NAME.")
    ] = None,
    loso: Annotated[
        bool,
        typer.Option(
            "--leave-one-source-out",
            help="Train without each source family in turn and score the one left out.",
        ),
    ] = False,
    with_starter: Annotated[
        bool,
        typer.Option("--with-starter", help="Leave-one-source-out: train on --data + starter."),
    ] = False,
    starter_only: Annotated[
        bool,
        typer.Option(
            "--starter-only",
            help="Leave-one-source-out: train on the starter corpus only; --data is never "
            "trained on, each file is scored as a new source.",
        ),
    ] = False,
    test_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--test-data", help="Leave-one-source-out: score a left-out file on these rows."
        ),
    ] = None,
    leave_out: Annotated[
        list[str] | None,
        typer.Option(
            "--leave-out",
            help="Leave-one-source-out: leave out only this family (repeatable; default all).",
        ),
    ] = None,
    arch: Annotated[str, typer.Option(help=ARCH_HELP)] = "vectors",
    seed: Annotated[int | None, typer.Option(help="Leave-one-source-out: seed.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Leave-one-source-out: epochs.")] = None,
    folds: Annotated[int | None, typer.Option(help="Leave-one-source-out: inner folds.")] = None,
) -> None:
    """Per-label precision/recall/F1, macro-F1 and confusion matrix, per file and overall.

    With --leave-one-source-out: the cross-source evaluation (README, "Data and the classifier").
    """
    from classifiers.data import DataError, load_examples, load_starter
    from triage.models import LABELS

    labels = [s.strip() for s in (only_labels or "").split(",") if s.strip()]
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        _fail(f"unknown label(s) {', '.join(unknown)} (labels: {', '.join(LABELS)})", 2)
    if loso:
        from classifiers.crosseval import leave_one_source_out, render

        try:
            given = load_examples([str(p) for p in data or []])
            tests = load_examples([str(p) for p in test_data or []])
        except DataError as exc:
            _fail(str(exc), 2)
            return
        if starter_only:
            train_data, unseen = load_starter(), given
        else:
            train_data, unseen = given + (load_starter() if with_starter or not data else []), []
        try:
            result = leave_one_source_out(
                train_data,
                unseen,
                test_data=tests,
                only_labels=labels,
                leave_out=leave_out or [],
                config_path=_config_for(arch),
                seed=seed,
                epochs=epochs,
                folds=folds,
                baseline=baseline,
                log=lambda msg: typer.echo(msg, err=True),
            )
        except ValueError as exc:
            _fail(str(exc), 2)
            return
        typer.echo(json.dumps(result, indent=2) if as_json else render(result))
        if record_as:
            from classifiers.evaluate import record

            typer.echo(f"recorded in {record(result, record_as, model)}", err=True)
        return
    if not data:
        _fail("give --data PATH (labelled CSV/JSONL files or folders)", 2)
        return
    from classifiers.evaluate import evaluate_model, render_text

    try:
        result = evaluate_model(
            [str(p) for p in data],
            model,
            baseline=baseline,
            balanced=balanced,
            only_labels=labels,
            report_dir=report_dir,
        )
    except DataError as exc:
        _fail(str(exc), 2)
        return
    if not errors:
        result.pop("errors", None)
    typer.echo(json.dumps(result, indent=2) if as_json else render_text(result))
    if record_as:
        from classifiers.evaluate import record

        typer.echo(f"recorded in {record(result, record_as)}", err=True)


@app.command()
def bench(
    n: Annotated[int, typer.Option("--n", help="Mentions to generate.")] = 100_000,
    input_dir: Annotated[
        Path | None,
        typer.Option("--input", help="Folder of JSONL drops to use instead of generating."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model folder (default: shipped).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the generated data and database.")] = False,
    drain_messages: Annotated[
        int, typer.Option(help="Outbox messages to drain to the fake Slack.")
    ] = 1000,
) -> None:
    """Benchmark the pipeline end to end against the bare classifier (see README, Performance)."""
    _quiet_prefect(verbose=False)
    from triage.bench import render, run_bench

    def progress(msg: str) -> None:
        typer.echo(msg, err=True)

    report = run_bench(
        n,
        input_dir=input_dir,
        model=str(model) if model else None,
        keep=keep,
        drain_messages=drain_messages,
        log=progress,
    )
    typer.echo(json.dumps(report, indent=2) if as_json else render(report))


@outbox_app.command("retry")
def outbox_retry(
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Put dead-lettered deliveries back in the queue for the next run."""
    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg) as store:
        n = store.retry_dead(destination)
    typer.echo(f"requeued {n} dead-lettered deliveries")


def main() -> None:
    """Entry point of the ``triage`` console script.

    A configuration or store error that a command did not handle itself still ends as one line
    and its exit code (2 for configuration), never as a traceback.
    """
    from triage.config import ConfigError
    from triage.store import StoreError

    try:
        app()
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except StoreError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
