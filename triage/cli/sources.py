"""``triage sources`` and ``triage quarantine``: look at sources, sample them, recover from quarantine."""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triage.cli.options import ConfigOpt, DbOpt, load_config_or_exit, store_or_exit
from triage.cli.options import fail as _fail

if TYPE_CHECKING:
    from connectors import SourceContext
    from triage.config import Config, SourceConfig
    from triage.models import Rejected
    from triage.store import Store

sources_app = typer.Typer(
    no_args_is_help=True,
    help="List, check (with a parsed sample) and reset the configured sources.",
)
quarantine_app = typer.Typer(
    invoke_without_command=True,
    help="Show quarantined records and why; retry or clear them.",
)

SourceOpt = Annotated[str | None, typer.Option("--source", help="Only this source.")]

# A source whose run (or sample) quarantined more than this share of what it read is reported
# loudly, and from MOSTLY_MIN records on `triage run` / `triage sources check` exit 1: that is a
# mapping or format problem to fix, not a few odd records.
MOSTLY = 0.5
MOSTLY_MIN = 10
# "export.csv line 12: created_at '11/03' does not match ..." -> file, line, reason.
_WHERE = re.compile(r"^(?P<file>.+?) line (?P<line>\d+): (?P<reason>.*)$", re.DOTALL)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\d[\d,]*")


# ----------------------------------------------------------------------------- helpers
def _load(config: str | None, db: str | None = None) -> Config:
    return load_config_or_exit(config, db)


def _source(cfg: Config, name: str) -> SourceConfig:
    source = next((s for s in cfg.sources if s.name == name), None)
    if source is None:
        names = ", ".join(s.name for s in cfg.sources) or "none"
        _fail(f"no source named '{name}' in {cfg.path} (configured: {names})", 2)
    return source


def _known_or_exit(cfg: Config, name: str) -> None:
    """Exit 2 for a source name that is neither configured nor in quarantine (a typo).

    A source no longer configured may still have records in quarantine, so only a name that
    matched nothing at all is refused: "quarantine is empty" would pass for an answer.
    """
    if not any(s.name == name for s in cfg.sources):
        _source(cfg, name)


def source_context(cfg: Config, source: SourceConfig, batch_size: int = 5000) -> SourceContext:
    """The connector's view of a configured source, with secrets from env or Secret blocks."""
    from connectors import SourceContext
    from triage.secrets import get_secret

    return SourceContext(
        name=source.name,
        settings=source.settings,
        base_dir=cfg.path.parent,
        batch_size=batch_size,
        secret=lambda key: get_secret(key, key.lower().replace("_", "-")),
    )


def _store(cfg: Config, *, read_only: bool = False) -> AbstractContextManager[Store]:
    """Open the store, or exit with one clear line (the shared path: missing, locked, damaged)."""
    return store_or_exit(cfg, read_only=read_only, must_exist=True)


def reason_kind(reason: str) -> str:
    """A quarantine reason without its file, line and quoted values, for counting alike reasons."""
    match = _WHERE.match(reason)
    text = match.group("reason") if match else reason
    return _QUOTED.sub("…", text)


def describe_rejects(rejected: list[Rejected], top: int = 5) -> list[str]:
    """One line per kind of reason, most frequent first, each with an example."""
    kinds: Counter[str] = Counter()
    example: dict[str, str] = {}
    for r in rejected:
        kind = reason_kind(r.reason)
        kinds[kind] += 1
        example.setdefault(kind, r.reason)
    lines = [f"  {n:>6} x {example[kind]}" for kind, n in kinds.most_common(top)]
    if len(kinds) > top:
        lines.append(f"         ... and {len(kinds) - top} other kinds of reason")
    return lines


def mostly_quarantined(summary: dict[str, Any]) -> tuple[list[str], bool]:
    """Loud lines for the sources of a ``triage run`` that quarantined most of what they read.

    The rule (README, "Recovering from quarantine"): a source that quarantined more than half of
    the records it read in this run gets a warning line; when that is also at least
    ``MOSTLY_MIN`` records, the run exits 1. A quiet feed with one odd entry warns, it does not
    fail a scheduled run.

    Args:
        summary: The run summary (``sources`` with ``fetched`` and ``quarantined`` per source).

    Returns:
        ``(lines, fail)``: one line per such source, and whether the run should exit 1.
    """
    lines: list[str] = []
    fail = False
    for name, s in summary.get("sources", {}).items():
        read, bad = int(s.get("fetched") or 0), int(s.get("quarantined") or 0)
        if bad and bad > MOSTLY * read:
            fail = fail or bad >= MOSTLY_MIN
            lines.append(
                f"WARNING: source '{name}' quarantined {bad} of the {read} records it read "
                f"({bad / read:.0%}); see `triage quarantine --source {name}`, fix the file or "
                f"its settings (`triage sources check {name}`), then `triage quarantine retry "
                f"--source {name}`"
            )
    return lines, fail


# ----------------------------------------------------------------------------- sources
@sources_app.command("list")
def sources_list(config: ConfigOpt = None) -> None:
    """Show every connector type, its settings, and which sources are configured."""
    from connectors import CONNECTORS

    cfg = _load(config)
    configured: dict[str, list[str]] = {}
    for s in cfg.sources:
        configured.setdefault(s.type, []).append(s.name + ("" if s.enabled else " (disabled)"))
    for kind, module in sorted(CONNECTORS.items()):
        names = ", ".join(configured.get(kind, [])) or "not configured"
        typer.echo(f"{kind}: {names}")
        for key, desc in module.SETTINGS.items():
            typer.echo(f"    {key:<16} {desc}")


@sources_app.command("check")
def sources_check(
    name: str,
    config: ConfigOpt = None,
    sample_size: Annotated[
        int, typer.Option("--sample", help="Records to parse where the source can be sampled.")
    ] = 1000,
) -> None:
    """Validate one source's settings and reachability; parse a sample and say what would fail.

    Exits 1 when the source cannot be read, or when more than half of the sample would be
    quarantined.
    """
    from connectors import ConnectorError, get_connector

    cfg = _load(config)
    source = _source(cfg, name)
    ctx = source_context(cfg, source)
    connector = get_connector(source.type)
    try:
        message = connector.check(ctx)
        sample = getattr(connector, "sample", None)
        batch = sample(ctx, max(1, sample_size)) if sample is not None else None
    except ConnectorError as exc:
        _fail(f"{name}: {exc}")
        return
    typer.echo(f"{name}: OK — {message}")
    if batch is None:
        return
    read, bad = batch.size, len(batch.rejected)
    typer.echo(
        f"sample of {read} record(s): {read - bad} would be stored, {bad} would be quarantined"
    )
    for line in describe_rejects(batch.rejected):
        typer.echo(line)
    if bad and bad > MOSTLY * read:
        typer.secho(
            f"WARNING: most of the sample would be quarantined; check the settings "
            f"(fields, date_format, timezone) of '{name}'",
            fg=typer.colors.RED,
            err=True,
        )
        if bad >= MOSTLY_MIN:
            raise typer.Exit(1)


@sources_app.command("reset")
def sources_reset(name: str, config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Forget a source's cursor: the next run reads it from the start.

    Items already stored are not stored twice (their ids are stable). Use it after fixing a file
    in place; `triage quarantine clear --source NAME` drops the stale quarantine.
    """
    cfg = _load(config, db)
    _source(cfg, name)
    with _store(cfg) as store:
        had = store.reset_cursor(name)
    if had:
        typer.echo(
            f"{name}: cursor reset; the next `triage run` reads it from the start "
            "(items already stored are not stored again)"
        )
    else:
        typer.echo(f"{name}: no cursor stored yet; the next run reads it from the start anyway")


# ----------------------------------------------------------------------------- quarantine
@quarantine_app.callback()
def quarantine(
    ctx: typer.Context,
    config: ConfigOpt = None,
    db: DbOpt = None,
    source: SourceOpt = None,
    limit: Annotated[int, typer.Option(help="How many to show (0: all).", min=0)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show quarantined records and why they were rejected (most recent first)."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = _load(config, db)
    with _store(cfg, read_only=True) as store:
        counts = store.quarantine_counts()
        rows = store.quarantined(limit or None, source)
    total = counts.get(source, 0) if source else sum(counts.values())
    if source is not None and not total:
        _known_or_exit(cfg, source)
    if as_json:
        records = [
            {**row, "received_at": row["received_at"].isoformat(), **_where(row["reason"])}
            for row in rows
        ]
        payload = {"total": total, "by_source": counts, "records": records}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if not rows:
        typer.echo("quarantine is empty" + (f" for source '{source}'" if source else ""))
        return
    for row in rows:
        typer.echo(f"[{row['source']}] {row['reason']}\n    {str(row['raw'])[:200]}")
    if total > len(rows):
        typer.echo(f"... {total - len(rows)} more (--limit 0 shows all)")
    typer.echo(
        f"{total} quarantined ({', '.join(f'{k} {v}' for k, v in counts.items())}); after fixing "
        "the cause: `triage quarantine retry`, or `triage sources reset NAME` for a file fixed "
        "in place"
    )


def _where(reason: str) -> dict[str, Any]:
    # File and line, as separate fields for scripts, where the reason names them.
    match = _WHERE.match(reason)
    if not match:
        return {"file": None, "line": None}
    return {"file": match.group("file"), "line": int(match.group("line"))}


@quarantine_app.command("retry")
def quarantine_retry(
    source: SourceOpt = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Read quarantined records again from their saved copy with the current settings.

    Records that are valid now (after fixing `fields`, `date_format` or `timezone`, say) are
    stored and leave the quarantine; the others stay. Sources whose records cannot be re-read
    from the saved copy (API sources) are named: reset their cursor instead.
    """
    from connectors import get_connector

    cfg = _load(config, db)
    configured = {s.name: s for s in cfg.sources}
    if source is not None:
        _source(cfg, source)
    with _store(cfg) as store:
        rows = store.quarantined(None, source)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_source.setdefault(row["source"], []).append(row)
        if not by_source:
            typer.echo("nothing to retry: quarantine is empty")
            return
        for name, group in sorted(by_source.items()):
            src = configured.get(name)
            reread = getattr(get_connector(src.type), "reread", None) if src else None
            if src is None or reread is None:
                why = "no longer configured" if src is None else f"a {src.type} source"
                typer.echo(
                    f"{name}: {len(group)} record(s) left as they are ({why}: cannot re-read "
                    f"saved copies; fix the source and run `triage sources reset {name}`, or "
                    f"`triage quarantine clear --source {name}`)"
                )
                continue
            items, fixed = reread(source_context(cfg, src), group)
            stored, _ = store.ingest(name, [], [], None, advance_cursor=False, items=items)
            # Stored first, then released from quarantine: a crash in between repeats the
            # retry harmlessly (stable ids), it never loses a record.
            store.clear_quarantine(keys=fixed)
            typer.echo(
                f"{name}: {len(fixed)} of {len(group)} record(s) valid now ({stored} new "
                f"item(s) stored); {len(group) - len(fixed)} still quarantined"
            )


@quarantine_app.command("clear")
def quarantine_clear(
    source: SourceOpt = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Delete quarantined records (all, or one source's) once they are dealt with."""
    cfg = _load(config, db)
    with _store(cfg) as store:
        n = store.clear_quarantine(source=source)
    if source is not None and not n:
        _known_or_exit(cfg, source)
    typer.echo(f"cleared {n} quarantined record(s)" + (f" of '{source}'" if source else ""))
