"""``triage run``, ``triage status`` and ``triage outbox``: the pipeline and its store."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from classifiers.adapt import ADAPTED
from triage.cli.clock import STARTED
from triage.cli.options import ConfigOpt, DbOpt, load_config_or_exit, store_or_exit
from triage.cli.options import fail as _fail
from triage.cli.sources import mostly_quarantined

if TYPE_CHECKING:
    from triage.config import Config

outbox_app = typer.Typer(no_args_is_help=True, help="Inspect and retry queued deliveries.")


def quiet_prefect(verbose: bool) -> None:
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


def print_summary(summary: dict[str, Any]) -> None:
    out: list[str] = [f"triage run {_timing(summary)}  (database {summary['database']})"]
    out.append("sources:")
    for name, s in summary["sources"].items():
        out.append(
            f"  {name:<18} fetched {s['fetched']:>6}  new {s['stored']:>6}  quarantined {s['quarantined']:>4}"
        )
        out.extend(f"    note: {note}" for note in s.get("notes", ()))
    for name, err in summary["failed_sources"].items():
        out.append(f"  {name:<18} FAILED: {err}")
    c = summary["classify"]
    labels = ", ".join(f"{k} {v}" for k, v in c["by_label"].items()) or "nothing new"
    out.append(f"classified {c['classified']} ({labels}); needs review {c['needs_review']}")
    if c.get("adapted_sources"):
        how = c.get("adapted_by")
        # One mix needs no more words; row by row says how (classifiers.adapt.BY_CONTENT).
        detail = f" ({how}, within its source)" if how and how != ADAPTED else ""
        out.append(
            f"  scores adapted to the label mix of {', '.join(c['adapted_sources'])}{detail}"
        )
    if c.get("learned_sources"):
        out.append(
            "  not adapted, the model learned sources of these names (its training files, or "
            f"corrections it trained on): {', '.join(c['learned_sources'])}"
        )
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
        for name, f in sorted((d.get("failures") or {}).items()):
            # The first error of each destination: the count alone gives nothing to act on.
            counts = ", ".join(
                f"{n} {what}"
                for n, what in ((f["failed"], "to retry"), (f["dead"], "dead-lettered"))
                if n
            )
            error = " ".join(str(f["error"]).split())
            out.append(f"  {name}: {counts}; first error: {error[:300]}")
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
    stages = summary.get("customers")
    if stages:
        out.append(
            f"customers {sum(stages.values())} ({summary['customers_seconds']:.1f}s): "
            + ", ".join(f"{stage.replace('_', ' ')} {n}" for stage, n in stages.items())
            + " (`triage customers list`, `triage report --out report`)"
        )
    dr = summary.get("drift") or {}
    if dr.get("announced") or dr.get("error"):
        out.append(
            f"drift watch: {dr['error']}"
            if dr.get("error")
            else f"drift watch: {dr['announced']} signal(s) outside their band, announced"
        )
    if summary["failed_sources"]:
        failed = ", ".join(summary["failed_sources"])
        out.append(f"FAILED sources: {failed} (the other sources were triaged; exit code 1)")
    typer.echo("\n".join(out))


def _customer_stages(cfg: Config) -> tuple[dict[str, int], float]:
    """Customers per lifecycle stage now, and the seconds it took to derive them."""
    from triage.customers.view import load_view
    from triage.store import open_store

    started = time.monotonic()
    with open_store(cfg.database, read_only=True) as store:
        counts = load_view(store, cfg.customers).stage_counts()
    return counts, round(time.monotonic() - started, 3)


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
    quiet_prefect(verbose)
    # Fail fast, before Prefect and spaCy are even imported: the configuration, then the store.
    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg):
        pass
    from flows.triage import run_triage
    from triage.cli.progress import show_progress
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
    summary["wall_seconds"] = round(time.monotonic() - STARTED, 3)
    if cfg.customers.configured:
        # After the run's wall time: deriving every customer's stage is reported on its own line.
        try:
            summary["customers"], summary["customers_seconds"] = _customer_stages(cfg)
        except StoreError as exc:  # busy again already: the run itself succeeded
            typer.secho(f"customers per stage skipped: {exc}", fg=typer.colors.YELLOW, err=True)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    loud, too_many = mostly_quarantined(summary)
    for line in loud:
        typer.secho(line, fg=typer.colors.RED, err=True)
    if summary["failed_sources"] or too_many:
        raise typer.Exit(1)


def status(
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the state of the store: items by label, department, review and delivery state."""
    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg, read_only=True) as store:
        result = store.status()
    from triage.store import location

    result["database"] = location.shown(cfg.database)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"database {result['database']} (schema v{result['schema_version']})")
    typer.echo(
        f"items {result['items_total']}, classified {result['classified']}, "
        f"needs review {result['needs_review']}, quarantined {result['quarantined']}"
    )
    for key in ("by_label", "by_department", "by_source", "by_language", "deliveries"):
        typer.echo(
            f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in result[key].items())
        )


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
    if destination is not None and not n and destination not in cfg.destinations:
        # A removed destination may still have dead letters (requeued above, then); a name that
        # matched nothing and is not configured is a typo, not "nothing to retry".
        names = ", ".join(sorted(cfg.destinations)) or "none"
        _fail(f"no destination named '{destination}' in {cfg.path} (configured: {names})", 2)
    typer.echo(f"requeued {n} dead-lettered deliveries")
