"""The ``triage`` command line: one typer app, its command groups and its commands."""

from __future__ import annotations

import sys

import typer

from triage.cli import bench, learning, model, pipeline, privacy, report
from triage.cli.config import config_app
from triage.cli.customers import customers_app
from triage.cli.intake import intake_app
from triage.cli.slack import corrections_app, slack_app
from triage.cli.sources import quarantine_app, sources_app
from triage.cli.testimonials import testimonials_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="feedback-triage: sort unsolicited feedback and hand it to the team that owns it.",
)
app.command()(pipeline.run)
app.command()(pipeline.status)
app.command()(model.classify)
app.command()(model.train)
app.command()(model.evaluate)
app.command()(bench.bench)
app.command()(report.report)
app.command()(report.digest)
app.command()(learning.retrain)
app.command()(privacy.forget)
app.add_typer(sources_app, name="sources")
app.add_typer(pipeline.outbox_app, name="outbox")
app.add_typer(slack_app, name="slack")
app.add_typer(corrections_app, name="corrections")
app.add_typer(intake_app, name="intake")
app.add_typer(testimonials_app, name="testimonials")
app.add_typer(config_app, name="config")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(customers_app, name="customers")
app.add_typer(learning.models_app, name="models")


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
