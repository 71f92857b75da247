"""``triage customers list|show|merge``: the people behind the mentions and their lifecycle stage."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triage.cli.options import ConfigOpt, DbOpt, fail, load_config_or_exit, store_or_exit
from triage.customers.stages import STAGE_TITLES, STAGES

if TYPE_CHECKING:
    from triage.config import Config
    from triage.customers.models import Profile
    from triage.customers.view import CustomerView

customers_app = typer.Typer(
    no_args_is_help=True, help="Customers behind the mentions: profiles and lifecycle stages."
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
# Terminal control characters in public text could move the cursor or recolour the screen.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean(text: object, limit: int = 0) -> str:
    """Public text for a terminal: control characters replaced, whitespace folded, cut."""
    out = " ".join(_CONTROL.sub(" ", str(text)).split())
    return out if not limit or len(out) <= limit else out[: limit - 1] + "…"


def customer_view(config: Config) -> CustomerView:
    """Every customer and their stage now, from the configuration's store (read-only)."""
    from triage.customers.view import load_view

    with store_or_exit(config, read_only=True) as store:
        return load_view(store, config.customers)


def find_customer(view: CustomerView, ref: str) -> Profile | None:
    """The customer an id, ``platform:handle``, e-mail or key names; a bare handle when it is
    one customer's on any platform."""
    from triage.customers.profiles import normalize_handle

    found = view.resolution.get(ref)
    if found is not None or ":" in ref:
        return found
    handle = normalize_handle(ref)
    matches = [p for p in view.resolution.profiles if any(i.handle == handle for i in p.identities)]
    return matches[0] if len(matches) == 1 else None


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


@customers_app.command("list")
def list_customers(
    stage: Annotated[
        str | None, typer.Option("--stage", "-s", help=f"Only this stage: {', '.join(STAGES)}.")
    ] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List customers with their lifecycle stage, most recently active first."""
    from triage.customers.view import summary_row

    if stage is not None and stage not in STAGES:
        fail(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}", 2)
    view = customer_view(load_config_or_exit(config, db))
    rows = [
        summary_row(p, view.lifecycles[p.id])
        for p in sorted(view.resolution.profiles, key=lambda p: p.last_seen, reverse=True)
        if stage is None or view.lifecycles[p.id].stage == stage
    ]
    if as_json:
        typer.echo(_dumps(rows))
        return
    counts = view.stage_counts()
    typer.echo(
        f"{len(view.resolution.profiles)} customers: "
        + ", ".join(f"{STAGE_TITLES[s].lower()} {n}" for s, n in counts.items())
    )
    for r in rows:
        typer.echo(
            f"{r['id']}  {STAGE_TITLES[r['stage']]:<16} {r['mentions']:>3} mentions  "
            f"last {r['last_seen']:%Y-%m-%d}  {clean(r['name'], 40)}"
            f"  ({', '.join(r['platforms'])})"
        )


@customers_app.command()
def show(
    customer: Annotated[
        str, typer.Argument(help="Customer id, platform:handle, handle or e-mail address.")
    ],
    config: ConfigOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one customer: identities, stage history and every mention with its handoffs."""
    from triage.customers.view import profile_detail

    view = customer_view(load_config_or_exit(config, db))
    profile = find_customer(view, customer)
    if profile is None:
        fail(f"no customer {customer!r} (try `triage customers list`)", 1)
        return
    detail = profile_detail(view, profile)
    if as_json:
        typer.echo(_dumps(detail))
        return
    typer.echo(f"{clean(detail['name'], 80)}  {detail['id']}")
    since = detail["stage_since"]
    typer.echo(
        f"stage: {STAGE_TITLES[detail['stage']]}"
        + (f" since {since:%Y-%m-%d}" if since else "")
        + f"; bonds made {detail['bonds_made']}, broken {detail['bonds_broken']}, "
        f"unresolved issues {detail['unresolved']}; reach {detail['reach']}"
    )
    for ident in detail["identities"]:
        who = ident["handle"] or ident["email"] or ident["profile_url"] or ident["key"]
        typer.echo(f"  {ident['platform']}: {clean(who, 80)}")
    if detail["merged_by"]:
        typer.echo(f"  merged by: {', '.join(detail['merged_by'])}")
    typer.echo("history:")
    for change in detail["changes"]:
        typer.echo(
            f"  {change['at']:%Y-%m-%d} {change['from']} -> {change['to']} ({change['signal']})"
        )
    typer.echo("mentions:")
    for m in detail["mentions"]:
        handoffs = "; ".join(f"{h['department']} {h['state']}" for h in m["handoffs"])
        typer.echo(
            f"  {m['at']:%Y-%m-%d %H:%M} {m['source']:<12} {m['label'] or '-':<15} "
            f"{m['signal'] or '':<15} {clean(m['text'], 90)}"
            + (f"  [{handoffs}]" if handoffs else "")
        )


@customers_app.command()
def merge(
    a: Annotated[str, typer.Argument(help="A customer id, platform:handle or e-mail address.")],
    b: Annotated[str, typer.Argument(help="The other customer.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Merge two customers into one profile (kept in the store; the older id survives)."""
    from triage.customers.profiles import resolve_reference
    from triage.customers.view import load_view

    cfg = load_config_or_exit(config, db)
    with store_or_exit(cfg, must_exist=True) as store:
        view = load_view(store, cfg.customers)
        keys = [i.key for p in view.resolution.profiles for i in p.identities]
        found = {ref: resolve_reference(ref, keys) for ref in (a, b)}
        missing = [ref for ref, key in found.items() if key is None]
        if missing:
            fail(f"no customer {', '.join(map(repr, missing))} (try `triage customers list`)", 1)
        pa, pb = view.resolution.get(a), view.resolution.get(b)
        if pa is not None and pb is not None and pa.id == pb.id:
            typer.echo(f"{a} and {b} are already one customer ({pa.id})")
            return
        store.add_customer_merge(str(found[a]), str(found[b]), merged_by="cli")
        # By identity key: an id may be the newer profile's, which the merge retires.
        merged = load_view(store, cfg.customers).resolution.get(str(found[a]))
    assert merged is not None
    typer.echo(
        f"merged: {merged.id} now has {len(merged.identities)} identities and "
        f"{len(merged.mentions)} mentions"
    )
