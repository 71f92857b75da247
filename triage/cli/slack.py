"""``triage slack ...`` (the review app) and ``triage corrections ...`` (reviewers' relabels)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from triage.cli.options import ConfigOpt, DbOpt, bind_or_exit, fail, writable_or_exit

slack_app = typer.Typer(no_args_is_help=True, help="The Slack review app (marketing's review).")
corrections_app = typer.Typer(no_args_is_help=True, help="Reviewers' corrections as training data.")

MANIFEST = Path(__file__).parents[1] / "slack" / "manifest.yaml"


def _fail(message: str, code: int = 2) -> None:
    fail(message, code)


@slack_app.command("serve")
def serve_cmd(
    port: Annotated[int, typer.Option(help="Port of the HTTP endpoint.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 behind a proxy).")] = (
        "127.0.0.1"
    ),
    socket: Annotated[
        bool, typer.Option("--socket", help="Use Socket Mode (SLACK_APP_TOKEN) instead of HTTP.")
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between background passes over spooled decisions.")
    ] = 15.0,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Answer Slack's interactivity, slash command and App Home requests at /slack/events."""
    import logging

    from flows.settings import load_config
    from triage.config import ConfigError
    from triage.secrets import get_secret
    from triage.servers.slack_app import (
        EVENTS_PATH,
        ReviewWorker,
        build_app,
        serve,
        socket_mode_handler,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(config, database=db)
    except ConfigError as exc:
        _fail(str(exc))
        return
    token = get_secret("SLACK_BOT_TOKEN", "slack-bot-token")
    secret = get_secret("SLACK_SIGNING_SECRET", "slack-signing-secret")
    if not token:
        _fail("SLACK_BOT_TOKEN is not set (or the Prefect Secret block slack-bot-token)")
        return
    app_token = get_secret("SLACK_APP_TOKEN", "slack-app-token") if socket else None
    if socket and not app_token:
        _fail("--socket needs SLACK_APP_TOKEN (an xapp- token with connections:write)")
        return
    if not socket and not secret:
        _fail("SLACK_SIGNING_SECRET is not set (or the Prefect Secret block slack-signing-secret)")
        return
    worker = ReviewWorker(cfg, interval=interval)
    app = build_app(cfg, bot_token=token, signing_secret=secret, worker=worker, socket_mode=socket)
    if socket:
        worker.start()
        typer.echo("triage slack: Socket Mode, connecting…")
        socket_mode_handler(app, str(app_token)).start()
        return
    # Bind before starting the worker: exiting on a busy port or a bad --port with the worker's
    # thread still running aborted the interpreter ("terminate called...", exit 134 or 139).
    try:
        server = bind_or_exit(lambda: serve(app, host, port), host, port)
    except typer.Exit:
        app.responder.shutdown()
        raise
    worker.start()
    threading.Thread(target=server.serve_forever, daemon=True, name="triage-http").start()
    bound = server.server_address[1]
    typer.echo(f"triage slack: listening on http://{host}:{bound}{EVENTS_PATH}", err=True)

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        app.responder.shutdown()
        worker.stop()


@slack_app.command("manifest")
def manifest_cmd() -> None:
    """Print the Slack app manifest (paste it into "Create New App" → "From a manifest")."""
    typer.echo(MANIFEST.read_text(encoding="utf-8"))


@slack_app.command("apply")
def apply_cmd(config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Apply spooled decisions, update their messages and re-surface overdue items now."""
    from flows.settings import load_config
    from triage.review import process_pending

    result = process_pending(load_config(config, database=db), wait_s=30.0)
    typer.echo(json.dumps(result, default=str))
    if result.get("busy") or result.get("error"):
        raise typer.Exit(1)


@slack_app.command("bench-decisions")
def bench_decisions_cmd(
    items: Annotated[int, typer.Option(help="Items in the synthetic store.")] = 220_000,
    decisions: Annotated[int, typer.Option(help="Spooled clicks to apply.")] = 250,
    batch: Annotated[int, typer.Option(help="Decisions per transaction.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time one background pass applying spooled review decisions on a large store."""
    from triage.cli.bench_decisions import bench_decisions

    result = bench_decisions(
        items, decisions, batch=batch, progress=lambda m: typer.echo(m, err=True)
    )
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"applied {result['decisions']} decisions ({result['applied']} applied, "
        f"{result['superseded']} superseded) on {result['items']:,} items in "
        f"{result['seconds']:.2f}s ({result['per_decision_ms']:.1f} ms each, "
        f"batches of {result['batch']})"
    )


@corrections_app.command("export")
def corrections_export(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (text, label).")],
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Write reviewers' corrections as JSONL rows usable by `triage train --data`."""
    from flows.settings import load_config
    from triage.store import location, open_store

    cfg = load_config(config, database=db)
    if not location.exists(cfg.database):
        _fail(f"no database at {cfg.database} yet; run `triage run` first", 1)
    writable_or_exit(out)
    # Writable on purpose: opening applies pending migrations, so an older database works too.
    with open_store(cfg.database) as store:
        rows = store.training_examples()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    typer.echo(f"wrote {len(rows)} corrections to {out}")
