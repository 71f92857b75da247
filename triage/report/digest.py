"""The weekly digest for Slack: the report's key figures in a few Block Kit blocks, with charts.

:func:`build_digest` turns :class:`~triage.report.data.ReportData` and the report's charts into a
:class:`Digest`: the fallback ``text``, the ``blocks`` and the chart files to upload. Charts are
shown by ``image`` blocks that reference an uploaded Slack file (``slack_file: {"id": ...}``), so
the poster must:

1. upload each ``digest.files`` PNG with the files API (``files_upload_v2``: Slack's
   ``files.getUploadURLExternal`` then ``files.completeUploadExternal``), which gives a file id;
2. post ``digest.with_file_ids({key: file_id})`` with ``chat.postMessage``. A chart whose upload
   failed is left out of the message rather than failing the digest.

Until then the image blocks carry a placeholder id (``PENDING_UPLOAD:<key>``).
:func:`write_digest_preview` writes the preview (``--dry-run``, or no token) to an outbox folder:
the JSON body that would be posted plus copies of the charts.

Limits kept (Slack's Block Kit reference): at most 50 blocks per message; section text up to 3,000
characters; at most 10 section fields of up to 2,000 characters each; header text up to 150;
image ``alt_text`` and ``title`` up to 2,000; ``block_id`` up to 255; context blocks up to 10
elements. :func:`check_blocks` checks them and slack_sdk's own model validation. Public text
(names, quotes, feature requests) is escaped for Slack so it can never mention anyone or link.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    ImageBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from triage.customers.stages import STAGE_TITLES, STAGES
from triage.report.charts import Chart
from triage.report.data import ReportData
from triage.report.html import hours, safe_url, waited
from triage.slack.messages import escape, one_line

MAX_BLOCKS = 50
SECTION_TEXT_LIMIT = 3000
FIELDS_LIMIT = 10
FIELD_TEXT_LIMIT = 2000
HEADER_LIMIT = 150
ALT_TEXT_LIMIT = 2000
BLOCK_ID_LIMIT = 255
CONTEXT_ELEMENTS_LIMIT = 10
PENDING = "PENDING_UPLOAD:"
# The charts worth a picture in a chat message; the rest are a click away in the report.
DIGEST_CHARTS: tuple[str, ...] = ("volume_by_label", "handoff_times", "lifecycle_funnel")


@dataclass(frozen=True, slots=True)
class DigestFile:
    """A chart to upload before posting: the image block with ``block_id`` shows it."""

    key: str
    path: Path
    title: str
    alt_text: str


@dataclass(frozen=True, slots=True)
class Digest:
    """A digest ready to post: fallback text, blocks (images pending upload) and the files."""

    text: str
    blocks: tuple[dict[str, Any], ...]
    files: tuple[DigestFile, ...]

    def with_file_ids(self, file_ids: Mapping[str, str]) -> list[dict[str, Any]]:
        """The blocks with each chart's uploaded file id; charts without one are left out."""
        out: list[dict[str, Any]] = []
        for block in self.blocks:
            ref = block.get("slack_file", {}).get("id", "") if block["type"] == "image" else ""
            if ref.startswith(PENDING):
                file_id = file_ids.get(ref[len(PENDING) :])
                if not file_id:
                    continue
                block = {**block, "slack_file": {"id": file_id}}
            out.append(block)
        return out


def _clip(text: str, limit: int) -> str:
    """Cut text to ``limit`` characters without splitting an escape like ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp > len(cut) - 6 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + "…"


def _public(text: str, limit: int) -> str:
    """Untrusted text for mrkdwn: one line, escaped (no mentions, no links), bounded."""
    return _clip(escape(one_line(text)), limit)


def _link(url: str | None) -> str:
    href = safe_url(url)
    # A link of ours around a vetted URL; "|" and ">" would end Slack's <url|label> syntax early.
    if href is None or "|" in href or ">" in href or "<" in href:
        return ""
    return f" <{href}|link>"


def _mrkdwn(text: str) -> MarkdownTextObject:
    # verbatim: Slack must not turn channel names or URLs inside customers' words into links.
    return MarkdownTextObject(text=_clip(text, SECTION_TEXT_LIMIT), verbatim=True)


def _lines(title: str, lines: Sequence[str], empty: str) -> SectionBlock:
    """A titled section of whole lines: those that do not fit are left out, never cut.

    Cut at the section's limit, a line could end inside a ``<url|link>`` of ours, leaving a bare
    ``<`` and a public URL in the message.
    """
    text = f"*{title}*"
    for n, line in enumerate(lines):
        more = f"\n… and {len(lines) - n} more"
        if len(text) + 1 + len(line) + len(more) > SECTION_TEXT_LIMIT:
            text += more
            break
        text += "\n" + line
    if not lines:
        text += f"\n_{empty}_"
    return SectionBlock(text=_mrkdwn(text))


def build_digest(
    data: ReportData,
    charts: Mapping[str, Chart],
    *,
    report_url: str | None = None,
    top: int = 3,
) -> Digest:
    """Build the weekly digest from the report's figures and charts.

    Args:
        data: The same figures as the report.
        charts: The report's charts (from :func:`triage.report.write_report`); those in
            :data:`DIGEST_CHARTS` are attached.
        report_url: Where the full report is published, if anywhere.
        top: How many feature requests, advocates and customers at risk to list.

    Returns:
        The digest; every block passes :func:`check_blocks`.
    """
    start, end = data.period_start.strftime("%d %b"), data.period_end.strftime("%d %b %Y")
    title = f"Customer feedback: {start} – {end}"
    support = data.timing("support", "to_first_response")
    fields = [
        f"*Mentions*\n{data.mentions_total:,}",
        f"*Customers*\n{data.customers:,}",
        f"*Waiting for review*\n{len(data.backlog):,} (oldest {waited(data.oldest_backlog())})",
        f"*Support first reply (median)*\n{hours(support.median_hours) if support else '–'}",
        f"*Advocates*\n{len(data.advocates):,}",
        f"*At risk*\n{len(data.at_risk):,}",
        f"*Bonds made / broken*\n{data.bonds_made:,} / {data.bonds_broken:,}",
    ]
    by_label = ", ".join(f"{escape(k)} {v:,}" for k, v in data.by_label().items()) or "none"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_clip(title, HEADER_LIMIT), emoji=False)),
        SectionBlock(fields=[_mrkdwn(_clip(f, FIELD_TEXT_LIMIT)) for f in fields[:FIELDS_LIMIT]]),
        SectionBlock(text=_mrkdwn(f"*By type:* {by_label}")),
    ]
    files: list[DigestFile] = []

    def image(key: str) -> None:
        chart = charts.get(key)
        if chart is None or not chart.png.exists():
            return
        alt = _clip(chart.alt, ALT_TEXT_LIMIT)
        files.append(DigestFile(key, chart.png, chart.title, alt))
        blocks.append(
            ImageBlock(
                alt_text=alt,
                title=PlainTextObject(text=_clip(chart.title, ALT_TEXT_LIMIT), emoji=False),
                slack_file={"id": PENDING + key},
                block_id=f"chart-{key}"[:BLOCK_ID_LIMIT],
            )
        )

    image("volume_by_label")
    blocks.append(DividerBlock())
    timing_lines = [
        f"• *{escape(t.department)}*: first reply {hours(t.median_hours)} median, "
        f"{hours(t.p90_hours)} at the slow end ({t.count:,} handoffs)"
        for t in data.timings
        if t.source == "all" and t.measure == "to_first_response" and t.count
    ]
    blocks.append(_lines("How fast departments answer", timing_lines, "No handoffs answered yet."))
    image("handoff_times")
    blocks.append(DividerBlock())
    blocks.append(
        _lines(
            "Most requested",
            [f"• {_public(g.title, 200)} ({g.count:,})" for g in data.feature_groups[:top]],
            "No feature requests this period.",
        )
    )
    blocks.append(
        _lines(
            "Advocates",
            [
                f"• {_public(a.name, 80)}: {a.praise_count:,} praise, reach {a.reach:,}"
                + (
                    f"\n> {_public(a.quotes[0].text, 300)}{_link(a.quotes[0].url)}"
                    if a.quotes
                    else ""
                )
                for a in data.advocates[:top]
            ],
            "No advocates yet.",
        )
    )
    blocks.append(
        _lines(
            "At risk",
            [f"• {_public(a.name, 80)}: {escape(a.reason)}" for a in data.at_risk[:top]],
            "Nobody at risk.",
        )
    )
    funnel = " → ".join(f"{escape(STAGE_TITLES[s])} {data.stages.get(s, 0):,}" for s in STAGES[:-1])
    blocks.append(
        SectionBlock(
            text=_mrkdwn(f"*Lifecycle:* {funnel} · at risk {data.stages.get('at_risk', 0):,}")
        )
    )
    image("lifecycle_funnel")
    footer = "Full report with every chart and its CSV: `triage report`."
    if report_url and _link(report_url):
        footer = f"Full report:{_link(report_url)}"
    blocks.append(ContextBlock(elements=[_mrkdwn(footer)]))

    dicts = tuple(b.to_dict() for b in blocks)  # to_dict() runs slack_sdk's validators
    text = (
        f"{title}: {data.mentions_total:,} mentions, {len(data.advocates):,} advocates, "
        f"{len(data.at_risk):,} customers at risk."
    )
    digest = Digest(text=text, blocks=dicts, files=tuple(files))
    problems = check_blocks(digest.blocks)
    if problems:  # pragma: no cover - the builder bounds every text; this guards future edits
        raise ValueError("digest blocks break Slack's limits: " + "; ".join(problems))
    return digest


def check_blocks(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Problems with blocks against slack_sdk's validation and Slack's documented limits.

    Returns:
        One message per problem; empty when the blocks are fine to post.
    """
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks (limit {MAX_BLOCKS})")
    for n, raw in enumerate(blocks):
        where = f"block {n} ({raw.get('type')})"
        try:
            parsed = Block.parse(dict(raw))
            if parsed is None:
                problems.append(f"{where}: not a Block Kit block")
                continue
            parsed.validate_json()
        except (SlackObjectFormationError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        if len(str(raw.get("block_id", ""))) > BLOCK_ID_LIMIT:
            problems.append(f"{where}: block_id over {BLOCK_ID_LIMIT}")
        kind = raw.get("type")
        if kind == "section":
            if len(raw.get("text", {}).get("text", "")) > SECTION_TEXT_LIMIT:
                problems.append(f"{where}: text over {SECTION_TEXT_LIMIT}")
            fields = raw.get("fields", [])
            if len(fields) > FIELDS_LIMIT:
                problems.append(f"{where}: {len(fields)} fields (limit {FIELDS_LIMIT})")
            if any(len(f.get("text", "")) > FIELD_TEXT_LIMIT for f in fields):
                problems.append(f"{where}: a field over {FIELD_TEXT_LIMIT}")
        elif kind == "header" and len(raw["text"]["text"]) > HEADER_LIMIT:
            problems.append(f"{where}: text over {HEADER_LIMIT}")
        elif kind == "image":
            if len(raw.get("alt_text", "")) > ALT_TEXT_LIMIT:
                problems.append(f"{where}: alt_text over {ALT_TEXT_LIMIT}")
            if bool(raw.get("image_url")) == bool(raw.get("slack_file")):
                problems.append(f"{where}: needs exactly one of image_url and slack_file")
        elif kind == "context" and len(raw.get("elements", [])) > CONTEXT_ELEMENTS_LIMIT:
            problems.append(f"{where}: over {CONTEXT_ELEMENTS_LIMIT} elements")
    return problems


def write_digest_preview(digest: Digest, folder: Path, *, channel: str, key: str) -> Path:
    """Write what would be posted as ``folder/<key>.json``, with the charts in ``folder/<key>/``.

    The JSON has the ``chat.postMessage`` arguments (``channel``, ``text``, ``blocks`` with the
    placeholder file ids) and ``files``: each chart's key, title, alt text and preview path
    (relative to ``folder``). Writing the same key again replaces the preview.

    Args:
        digest: From :func:`build_digest`.
        folder: The outbox folder of the destination (e.g. ``outbox/marketing-channel``).
        channel: The channel it would be posted to.
        key: File name stem, e.g. ``digest-2026-11-09``.

    Returns:
        The JSON file's path.
    """
    charts = folder / key
    charts.mkdir(parents=True, exist_ok=True)
    listed = []
    for f in digest.files:
        target = charts / f.path.name
        shutil.copyfile(f.path, target)
        listed.append(
            {
                "key": f.key,
                "title": f.title,
                "alt_text": f.alt_text,
                "path": target.relative_to(folder).as_posix(),
            }
        )
    body = {
        "channel": channel,
        "kind": "digest",
        "text": digest.text,
        "blocks": list(digest.blocks),
        "files": listed,
    }
    path = folder / f"{key}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path
