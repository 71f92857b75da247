"""The report's PNG charts, each written with the CSV of the figures behind it.

Charts are drawn with matplotlib's Agg canvas on a fresh ``Figure`` (no pyplot state, no display
needed). Every chart copes with an empty period: it says so in the picture instead of failing.
Text from the public (feature requests, names) reaches the charts as plain text: ``$`` is escaped so
matplotlib never parses it as math, and characters outside the basic plane (emoji) are dropped
because the bundled font has no glyphs for them.

CSV cells that start like a spreadsheet formula (``=``, ``+``, ``-``, ``@``) get a leading ``'``,
the usual defence against formula injection when someone opens the CSV in a spreadsheet.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from triage.customers.stages import STAGE_TITLES, STAGES
from triage.customers.timing import MEASURES
from triage.report.data import AGE_BUCKETS, FOLLOW_UP_OUTCOMES, ReportData
from triage.slack.messages import LABEL_TITLES

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
LABEL_COLOURS = {
    "kudos": "#009E73",
    "sales_lead": "#0072B2",
    "feature_request": "#E69F00",
    "service_issue": "#D55E00",
    "other": "#999999",
    "unclassified": "#CCCCCC",
}
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
MEASURE_TITLES = {
    "to_handoff": "to handoff",
    "to_first_response": "to first response",
    "to_resolution": "to resolution",
}
DPI = 110


@dataclass(frozen=True, slots=True)
class Chart:
    """One written chart: its PNG, the CSV behind it, and a text alternative."""

    key: str
    title: str
    png: Path
    csv: Path
    alt: str


def plain(text: str, limit: int = 60) -> str:
    """Untrusted text made safe for a matplotlib label: no math, no missing glyphs, bounded."""
    flat = "".join(c for c in " ".join(text.split()) if ord(c) <= 0xFFFF)
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat.replace("$", r"\$")


def cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula is prefixed with ``'``."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a UTF-8 CSV with a header row."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([cell(v) for v in row])
    return path


def _figure(height: float = 4.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(9, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    # Counts are whole numbers: no "2.5 mentions" ticks (hours axes set their own locator).
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _save(fig: Figure, ax: Axes, path: Path, title: str, empty: bool, empty_text: str) -> None:
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    if empty:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _days(data: ReportData) -> list[date]:
    first, last = data.period_start.date(), data.period_end.date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _volume(data: ReportData, out: Path, by: str) -> Chart:
    key = f"volume_by_{by}"
    days = _days(data)
    totals = data.by_label() if by == "label" else data.by_source()
    series = list(totals)
    grid = {(d, s): 0 for d in days for s in series}
    for r in data.volume:
        grid[(r.day, getattr(r, by))] = grid.get((r.day, getattr(r, by)), 0) + r.count
    title = f"Mentions per day by {by}"
    fig, ax = _figure()
    bottom = [0] * len(days)
    for n, s in enumerate(series):
        values = [grid[(d, s)] for d in days]
        colour = LABEL_COLOURS.get(s) if by == "label" else None
        ax.bar(
            range(len(days)),
            values,
            bottom=bottom,
            label=plain(LABEL_TITLES.get(s, s) if by == "label" else s, 30),
            color=colour or SERIES_COLOURS[n % len(SERIES_COLOURS)],
            width=0.85,
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    step = max(1, len(days) // 10)
    ax.set_xticks(range(0, len(days), step), [d.strftime("%d %b") for d in days[::step]])
    ax.set_ylabel("mentions")
    if series:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, ax, out / f"{key}.png", title, not series, "No mentions in this period")
    write_csv(
        out / f"{key}.csv",
        ["day", *series, "total"],
        (
            [d.isoformat(), *(grid[(d, s)] for s in series), sum(grid[(d, s)] for s in series)]
            for d in days
        ),
    )
    summary = ", ".join(f"{s} {n}" for s, n in totals.items()) or "none"
    return Chart(key, title, out / f"{key}.png", out / f"{key}.csv", f"{title}: {summary}.")


def _backlog(data: ReportData, out: Path) -> Chart:
    key, title = "backlog_age", "Items waiting for review, by how long they have waited"
    ages = data.backlog_ages()
    labels = sorted({label for c in ages.values() for label in c})
    buckets = [t for _, t in AGE_BUCKETS]
    fig, ax = _figure(3.6)
    bottom = [0] * len(buckets)
    for label in labels:
        values = [ages[b][label] for b in buckets]
        ax.bar(
            buckets,
            values,
            bottom=bottom,
            label=plain(LABEL_TITLES.get(label, label), 30),
            color=LABEL_COLOURS.get(label, "#777777"),
        )
        bottom = [x + v for x, v in zip(bottom, values, strict=True)]
    if labels:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylabel("items")
    _save(fig, ax, out / f"{key}.png", title, not data.backlog, "Nothing is waiting for review")
    write_csv(
        out / f"{key}.csv",
        ["waiting", *labels, "total"],
        ([b, *(ages[b][label] for label in labels), sum(ages[b].values())] for b in buckets),
    )
    alt = ", ".join(f"{b}: {sum(ages[b].values())}" for b in buckets)
    return Chart(key, title, out / f"{key}.png", out / f"{key}.csv", f"{title}. {alt}.")


def _handoff_times(data: ReportData, out: Path) -> Chart:
    key, title = "handoff_times", "Hours from mention to handoff, first response and resolution"
    overall = [t for t in data.timings if t.source == "all"]
    departments = sorted({t.department for t in overall})
    fig, ax = _figure(max(3.0, 1.1 * len(departments) + 1.6))
    height = 0.8 / len(MEASURES)
    for n, measure in enumerate(MEASURES):
        stats = [data.timing(d, measure) for d in departments]
        ys = [i + n * height for i in range(len(departments))]
        medians = [s.median_hours or 0 if s else 0 for s in stats]
        ax.barh(
            ys,
            medians,
            height=height,
            label=f"median {MEASURE_TITLES[measure]}",
            color=SERIES_COLOURS[n],
        )
        p90 = [(y, s.p90_hours) for y, s in zip(ys, stats, strict=True) if s and s.p90_hours]
        if p90:
            ax.scatter(
                [v for _, v in p90],
                [y for y, _ in p90],
                marker="|",
                s=120,
                color="#333333",
                label="90th percentile" if n == 0 else None,
                zorder=3,
            )
    ax.set_yticks(
        [i + height for i in range(len(departments))], [plain(d, 30) for d in departments]
    )
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator())
    ax.set_xlabel("hours")
    if departments:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, ax, out / f"{key}.png", title, not departments, "No handoffs in this period")
    write_csv(
        out / f"{key}.csv",
        ["department", "source", "measure", "count", "median_hours", "p90_hours", "skipped"],
        (
            [
                t.department,
                t.source,
                t.measure,
                t.count,
                _round(t.median_hours),
                _round(t.p90_hours),
                t.skipped,
            ]
            for t in data.timings
        ),
    )
    alt = "; ".join(
        f"{d}: median first response {_round(s.median_hours)} h"
        for d in departments
        if (s := data.timing(d, "to_first_response")) and s.median_hours is not None
    )
    return Chart(key, title, out / f"{key}.png", out / f"{key}.csv", f"{title}. {alt}.")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _hbar(
    out: Path,
    key: str,
    title: str,
    names: Sequence[str],
    values: Sequence[int],
    colour: str,
    empty_text: str,
    xlabel: str,
    notes: Sequence[str] | None = None,
) -> Path:
    fig, ax = _figure(max(2.8, 0.42 * len(names) + 1.4))
    ax.barh(range(len(names)), values, color=colour)
    ax.set_yticks(range(len(names)), [plain(n, 55) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if notes and values:
        # Room at the right for the notes written after the longest bar.
        ax.set_xlim(0, max(values) * 1.4 or 1)
    for y, note in enumerate(notes or []):
        ax.annotate(
            plain(note, 32),
            (values[y], y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    _save(fig, ax, out / f"{key}.png", title, not names, empty_text)
    return out / f"{key}.png"


def _features(data: ReportData, out: Path) -> Chart:
    key, title = "feature_requests", "Largest feature-request groups"
    groups = data.feature_groups
    png = _hbar(
        out,
        key,
        title,
        [g.title for g in groups],
        [g.count for g in groups],
        LABEL_COLOURS["feature_request"],
        "No feature requests in this period",
        "requests",
    )
    path = write_csv(
        out / f"{key}.csv",
        ["rank", "request", "requests", "customers", "sources", "latest_url"],
        (
            [n, g.title, g.count, g.customers, " ".join(g.sources), g.url or ""]
            for n, g in enumerate(groups, 1)
        ),
    )
    alt = "; ".join(f"{g.title} ({g.count})" for g in groups[:5]) or "none"
    return Chart(key, title, png, path, f"{title}: {alt}.")


def _advocates(data: ReportData, out: Path) -> Chart:
    key, title = "advocates", "Advocates: praise count (reach in followers)"
    advs = data.advocates
    png = _hbar(
        out,
        key,
        title,
        [a.name for a in advs],
        [a.praise_count for a in advs],
        LABEL_COLOURS["kudos"],
        "No advocates yet",
        "praise mentions",
        [f"reach {a.reach:,}" for a in advs],
    )
    width = max((len(a.quotes) for a in advs), default=0)
    quote_cols = [c for n in range(1, width + 1) for c in (f"quote_{n}", f"quote_{n}_url")]
    path = write_csv(
        out / f"{key}.csv",
        ["customer_id", "name", "praise_count", "reach", "profile_url", *quote_cols],
        (
            [
                a.customer_id,
                a.name,
                a.praise_count,
                a.reach,
                a.profile_url or "",
                *(v for q in a.quotes for v in (q.text, q.url or "")),
            ]
            for a in advs
        ),
    )
    alt = "; ".join(f"{a.name}: {a.praise_count} praise, reach {a.reach}" for a in advs) or "none"
    return Chart(key, title, png, path, f"{title}. {alt}.")


def _at_risk(data: ReportData, out: Path) -> Chart:
    key, title = "at_risk", "Customers at risk: unresolved complaints"
    risky = data.at_risk[:15]
    png = _hbar(
        out,
        key,
        title,
        [a.name for a in risky],
        [a.unresolved for a in risky],
        LABEL_COLOURS["service_issue"],
        "No customers at risk",
        "unresolved complaints",
        ["talks of leaving" if "leaving" in a.reason else "" for a in risky],
    )
    path = write_csv(
        out / f"{key}.csv",
        [
            "customer_id",
            "name",
            "reason",
            "unresolved",
            "bonds_broken",
            "last_seen",
            "their_words",
            "their_words_url",
            "profile_url",
        ],
        (
            [
                a.customer_id,
                a.name,
                a.reason,
                a.unresolved,
                a.bonds_broken,
                a.last_seen.isoformat(),
                a.last_quote.text if a.last_quote else "",
                (a.last_quote.url if a.last_quote else None) or "",
                a.profile_url or "",
            ]
            for a in data.at_risk
        ),
    )
    alt = "; ".join(f"{a.name} ({a.reason})" for a in risky) or "none"
    return Chart(key, title, png, path, f"{title}. {alt}.")


def _funnel(data: ReportData, out: Path) -> Chart:
    key, title = "lifecycle_funnel", "Customers per lifecycle stage"
    counts = [data.stages.get(s, 0) for s in STAGES]
    colours = ["#56B4E9"] * (len(STAGES) - 1) + [LABEL_COLOURS["service_issue"]]
    fig, ax = _figure(3.8)
    ax.barh(range(len(STAGES)), counts, color=colours)
    ax.set_yticks(range(len(STAGES)), [STAGE_TITLES[s] for s in STAGES])
    ax.invert_yaxis()
    ax.set_xlabel("customers")
    for y, n in enumerate(counts):
        ax.annotate(str(n), (n, y), xytext=(4, 0), textcoords="offset points", va="center")
    _save(fig, ax, out / f"{key}.png", title, not any(counts), "No customers in this period")
    path = write_csv(
        out / f"{key}.csv",
        ["stage", "title", "customers"],
        ([s, STAGE_TITLES[s], data.stages.get(s, 0)] for s in STAGES),
    )
    write_csv(
        out / "follow_ups.csv",
        ["after_a_resolved_issue", "count"],
        ([o, data.follow_ups.get(o, 0)] for o in FOLLOW_UP_OUTCOMES),
    )
    alt = ", ".join(f"{STAGE_TITLES[s]} {data.stages.get(s, 0)}" for s in STAGES)
    return Chart(key, title, out / f"{key}.png", path, f"{title}: {alt}.")


CHARTS: tuple[tuple[str, Callable[[ReportData, Path], Chart]], ...] = (
    ("volume_by_label", lambda d, o: _volume(d, o, "label")),
    ("volume_by_source", lambda d, o: _volume(d, o, "source")),
    ("backlog_age", _backlog),
    ("handoff_times", _handoff_times),
    ("feature_requests", _features),
    ("advocates", _advocates),
    ("at_risk", _at_risk),
    ("lifecycle_funnel", _funnel),
)


def write_charts(data: ReportData, out: Path) -> dict[str, Chart]:
    """Write every chart and its CSV into ``out``; key -> :class:`Chart`, in page order."""
    out.mkdir(parents=True, exist_ok=True)
    return {key: draw(data, out) for key, draw in CHARTS}
