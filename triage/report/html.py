"""The report page: one self-contained ``index.html`` beside its PNG charts and CSVs.

Written for a reader who has never opened a terminal: a few headline figures first, then one
section per question (how much came in, what waits, how fast departments answer, what customers
ask for, who recommends us, who may leave, where customers are in their lifecycle), each with a
sentence on how to read it, the chart, a table and a link to the CSV behind it. No scripts, no
external fonts or styles: it opens from a folder, an e-mail attachment or a file share.

All public text (quotes, names, feature requests, links) is escaped; links are kept only when they
are plain ``http(s)`` URLs, and open with ``rel="nofollow noopener noreferrer"``.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from triage.customers.stages import STAGE_DESCRIPTIONS, STAGE_TITLES, STAGES
from triage.customers.timing import MEASURES
from triage.report.charts import Chart, write_charts
from triage.report.data import FOLLOW_UP_OUTCOMES, Quote, ReportData
from triage.slack.messages import plain_url

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
  color:#1d2330;background:#f6f7f9;line-height:1.5}
main{max-width:1040px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.9rem;margin:.2em 0}h2{font-size:1.35rem;margin-top:2.2em;
  border-bottom:2px solid #e3e6ea;padding-bottom:.2em}
p.lead{color:#4a5160;margin-top:0}.how{color:#4a5160;font-size:.95rem}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.card{flex:1 1 150px;border:1px solid #e3e6ea;border-radius:8px;padding:12px 14px}
.card .n{font-size:1.7rem;font-weight:700}.card .t{color:#4a5160;font-size:.9rem}
img{max-width:100%;height:auto;border:1px solid #eef0f2;border-radius:6px}
table{border-collapse:collapse;width:100%;margin:12px 0;font-size:.93rem}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#f2f4f7}td.num,th.num{text-align:right;white-space:nowrap}
blockquote{margin:.2em 0 .6em;padding-left:10px;border-left:3px solid #009E73;color:#2b3140}
.csv{font-size:.9rem}.warn{color:#b3400b;font-weight:600}footer{margin-top:3em;color:#6b7280}
"""


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What :func:`write_report` wrote."""

    index: Path
    charts: dict[str, Chart]


def esc(text: object) -> str:
    """Escape text for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) link without spaces or control characters, else None."""
    return plain_url(url, 2000)


def link(text: str, url: str | None) -> str:
    """Escaped text, linked when the URL is safe."""
    href = safe_url(url)
    if href is None:
        return esc(text)
    return f'<a href="{esc(href)}" rel="nofollow noopener noreferrer">{esc(text)}</a>'


def hours(value: float | None) -> str:
    """A duration in hours as a person would say it."""
    if value is None:
        return "–"
    if value < 1:
        return f"{max(1, round(value * 60))} min"
    if value < 48:
        return f"{value:.1f} h"
    return f"{value / 24:.1f} days"


def waited(delta: timedelta | None) -> str:
    """A waiting time in words."""
    return "–" if delta is None else hours(delta.total_seconds() / 3600)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n:,} times"


def _day(value: datetime) -> str:
    return value.strftime("%d %b %Y")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(header)}">Nothing to show for this period.</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(chart: Chart, out: Path) -> str:
    png = os.path.relpath(chart.png, out)
    data = os.path.relpath(chart.csv, out)
    return (
        f'<figure><img src="{esc(png)}" alt="{esc(chart.alt)}" width="990">'
        f'<figcaption class="csv">Figures behind this chart: '
        f'<a href="{esc(data)}">{esc(os.path.basename(data))}</a></figcaption></figure>'
    )


def _quote(q: Quote | None) -> str:
    if q is None:
        return ""
    source = f" <small>{link('original', q.url)}</small>" if safe_url(q.url) else ""
    return f"<blockquote>{esc(q.text)}{source}</blockquote>"


def _cards(data: ReportData) -> str:
    support = data.timing("support", "to_first_response")
    cards = [
        (f"{data.mentions_total:,}", "mentions in the period"),
        (f"{data.customers:,}", "customers who wrote"),
        (f"{len(data.backlog):,}", f"waiting for review (oldest {waited(data.oldest_backlog())})"),
        (hours(support.median_hours) if support else "–", "median first reply from support"),
        (f"{len(data.advocates):,}", "advocates"),
        (f"{len(data.at_risk):,}", "customers at risk"),
        (f"{data.bonds_made:,} / {data.bonds_broken:,}", "bonds made / broken"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="n">{esc(n)}</div><div class="t">{esc(t)}</div></div>'
            for n, t in cards
        )
        + "</div>"
    )


def render_html(data: ReportData, charts: dict[str, Chart], out: Path) -> str:
    """The report page as HTML text (charts already written under ``out``)."""
    fig = {key: _figure(c, out) for key, c in charts.items()}
    period = f"{_day(data.period_start)} – {_day(data.period_end)}"
    labels = ", ".join(f"{esc(k)}: {v:,}" for k, v in data.by_label().items()) or "none"
    sources = ", ".join(f"{esc(k)}: {v:,}" for k, v in data.by_source().items()) or "none"
    timing_rows = []
    for department in sorted({t.department for t in data.timings}):
        row = [esc(department)]
        for measure in MEASURES:
            stat = data.timing(department, measure)
            row.append(
                "–"
                if stat is None or not stat.count
                else f"{esc(hours(stat.median_hours))} / {esc(hours(stat.p90_hours))}"
                f" <small>({stat.count:,})</small>"
            )
        timing_rows.append(row)
    feature_rows = [
        [
            str(n),
            link(g.title, g.url),
            f"{g.count:,}",
            f"{g.customers:,}",
            esc(", ".join(g.sources)),
        ]
        for n, g in enumerate(data.feature_groups, 1)
    ]
    advocate_rows = [
        [
            link(a.name, a.profile_url),
            f"{a.praise_count:,}",
            f"{a.reach:,}",
            "".join(_quote(q) for q in a.quotes),
        ]
        for a in data.advocates
    ]
    risk_rows = [
        [
            link(a.name, a.profile_url),
            esc(a.reason),
            f"{a.unresolved:,}",
            f"{a.bonds_broken:,}",
            esc(_day(a.last_seen)),
            _quote(a.last_quote),
        ]
        for a in data.at_risk
    ]
    stage_rows = [
        [esc(STAGE_TITLES[s]), f"{data.stages.get(s, 0):,}", esc(STAGE_DESCRIPTIONS[s])]
        for s in STAGES
    ]
    timing_table = _table(
        ["Department", "To handoff", "To first reply", "To resolution"], timing_rows, {1, 2, 3}
    )
    risk_table = _table(
        ["Customer", "Why", "Unresolved", "Bonds broken", "Last seen", "In their words"],
        risk_rows,
        {2, 3},
    )
    follow = {o: data.follow_ups.get(o, 0) for o in FOLLOW_UP_OUTCOMES}
    oldest = data.oldest_backlog()
    backlog_note = (
        f'<p class="warn">The oldest item has waited {esc(waited(oldest))}.</p>'
        if oldest is not None and oldest > timedelta(days=3)
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(data.title)} · {esc(period)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{esc(data.title)}</h1>
<p class="lead">Feedback from {esc(period)} (UTC): what customers said about us, who it went to,
how quickly it was answered, and where each customer stands.</p>
{_cards(data)}

<h2 id="volume">How much came in</h2>
<p class="how">Every mention we collected, per day. The first chart sorts them by what they are
(praise, sales leads, feature requests, service issues, other); the second by where they came
from. By type: {labels}. By source: {sources}.</p>
{fig["volume_by_label"]}
{fig["volume_by_source"]}

<h2 id="backlog">Waiting for review</h2>
<p class="how">Items the classifier was not sure about wait for a person in marketing to confirm
them before they are handed on. {len(data.backlog):,} items are waiting now.</p>
{backlog_note}
{fig["backlog_age"]}

<h2 id="handoffs">How fast departments answer</h2>
<p class="how">Measured from the moment the customer wrote: until the department received the
handoff, until its first reply, and until the matter was resolved. The median is the typical case;
the 90th percentile is the slow end (nine in ten were faster).</p>
{fig["handoff_times"]}
{timing_table}
<p class="how">Each cell: median / 90th percentile (handoffs measured). The same per source is in
the CSV.</p>

<h2 id="features">What customers ask for</h2>
<p class="how">Feature requests that ask for the same thing are grouped; the largest groups
first, named by the first request in the customer's own words.</p>
{fig["feature_requests"]}
{_table(["#", "Request", "Requests", "Customers", "Sources"], feature_rows, {0, 2, 3})}

<h2 id="advocates">Advocates</h2>
<p class="how">Customers who recommend us to others. Reach is the number of followers across
their accounts; the quotes are their own words, best first.</p>
{fig["advocates"]}
{_table(["Customer", "Praise", "Reach", "Best quotes"], advocate_rows, {1, 2})}

<h2 id="at-risk">Customers at risk</h2>
<p class="how">Customers who talk of leaving, cancelling or switching away, or who have
complained repeatedly without a resolution. Reaching out to them first matters most.</p>
{fig["at_risk"]}
{risk_table}

<h2 id="lifecycle">Where customers are</h2>
<p class="how">Each customer's stage follows from everything they have written and what became
of it. A <strong>bond</strong> is made when we solve a customer's problem and they come back
with praise; it is broken when a problem is ignored or bounced between departments.
Bonds made: <strong>{data.bonds_made:,}</strong>. Bonds broken:
<strong>{data.bonds_broken:,}</strong>. After a resolved service issue, customers came back
with praise {_times(follow["praise"])}, stayed silent {_times(follow["silence"])} and
complained again {_times(follow["new_complaint"])} ({follow["pending"]:,} still too recent to
tell; <a href="follow_ups.csv">follow_ups.csv</a>).</p>
{fig["lifecycle_funnel"]}
{_table(["Stage", "Customers", "What it means"], stage_rows, {1})}

<footer>Made by feedback-triage from {data.mentions_total:,} mentions.
Each chart's figures are in the CSV file linked under it.</footer>
</main></body></html>
"""


def write_report(data: ReportData, out: Path) -> ReportResult:
    """Write ``out/index.html`` with its PNG charts and CSVs (the folder is created).

    Args:
        data: The figures; see :func:`triage.report.data.build_report_data`.
        out: The folder to write into; existing files of the same names are replaced.

    Returns:
        The index path and the charts written.
    """
    charts = write_charts(data, out)
    index = out / "index.html"
    tmp = index.with_suffix(".html.tmp")
    tmp.write_text(render_html(data, charts, out), encoding="utf-8")
    os.replace(tmp, index)  # a reader never sees half a page
    return ReportResult(index, charts)
