"""``triage intake serve``: the web-form intake endpoint (see triage/servers/intake.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from triage.cli.options import ConfigOpt, DbOpt, bind_or_exit, load_config_or_exit

intake_app = typer.Typer(no_args_is_help=True, help="Receive web-form posts (signed JSON).")


@intake_app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8085,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; keep loopback behind a TLS proxy.")
    ] = "127.0.0.1",
    spool_dir: Annotated[
        Path,
        typer.Option("--spool-dir", help="Where accepted posts are spooled (the webhook source)."),
    ] = Path("intake-spool"),
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Largest accepted body; larger ones get 413.")
    ] = 64 * 1024,
    source_type: Annotated[
        str, typer.Option("--source-type", help="source_type for posts that do not say.")
    ] = "web_form",
    max_connections: Annotated[
        int,
        typer.Option("--max-connections", help="Connections served at once; more get 429.", min=1),
    ] = 64,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout", help="Seconds a client has to send a request; then 408.", min=0.1
        ),
    ] = 10.0,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Serve POST /intake until interrupted; each accepted post is stored or fsynced before the 202.

    With a PostgreSQL store (the configuration's database, TRIAGE_DB or --db) and an enabled
    webhook source reading --spool-dir, posts are written to the store directly and spooled only
    while it is unavailable; with the DuckDB file every post is spooled.
    """
    from connectors import webhook
    from connectors.file import DEFAULT_MAX_RECORD_BYTES
    from triage.secrets import get_secret
    from triage.servers.intake import SECRET_BLOCK, SECRET_ENV, IntakeSettings, make_server
    from triage.servers.intake_store import direct_writer, webhook_source
    from triage.store import location

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    secret = get_secret(SECRET_ENV, SECRET_BLOCK)
    if not secret:
        typer.secho(
            f"error: no intake secret: set {SECRET_ENV} or create the Prefect Secret block "
            f"'{SECRET_BLOCK}'",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    cfg = load_config_or_exit(config, db)
    # Posts are refused at the door when longer than the source that reads them takes.
    source = webhook_source(cfg, spool_dir)
    record_bytes = webhook.max_record_bytes(source) if source else DEFAULT_MAX_RECORD_BYTES
    direct = direct_writer(cfg, spool_dir)
    if direct is not None:
        direct.warm_up()
    settings = IntakeSettings(
        secret=secret,
        spool_dir=spool_dir,
        max_bytes=max_bytes,
        source_type=source_type,
        max_connections=max_connections,
        request_timeout=request_timeout,
        max_record_bytes=record_bytes,
        direct=direct,
    )
    # A failed bind closes the direct writer (IntakeServer.server_close) before the exit.
    server = bind_or_exit(lambda: make_server(settings, host, port), host, port)
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    where = f"spooling to {spool_dir}"
    if direct is not None:
        where = (
            f"writing to {location.shown(cfg.database)} as source '{direct.source.name}' "
            f"({where} while it is unavailable)"
        )
    typer.echo(f"intake listening on http://{bound_host}:{bound_port}/intake, {where}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
