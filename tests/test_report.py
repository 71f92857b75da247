"""The report renders in a real browser; the digest blocks pass Block Kit validation and limits."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slack_sdk.models.blocks import Block

from triage.customers import (
    HandoffOutcome,
    Mention,
    assign_stages,
    load_outcomes,
    resolve_profiles,
)
from triage.customers.timing import TimingStat
from triage.report import (
    Advocate,
    AtRiskCustomer,
    BacklogItem,
    FeatureGroup,
    Quote,
    ReportData,
    ReportResult,
    VolumeRow,
    build_digest,
    build_report_data,
    check_blocks,
    write_digest_preview,
    write_report,
)
from triage.report.digest import PENDING


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """The renderers do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=13, hours=18)  # 17 Nov 00:00 .. 30 Nov: 14 days
HOSTILE_NAME = "<img src=x onerror=alert(1)>Eve <!channel>"
HOSTILE_QUOTE = "<script>document.title='pwned'</script> best app & I told my team <@U024BE7LH>"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def _volume() -> tuple[VolumeRow, ...]:
    rows = []
    for n in range(14):
        day = date(2026, 11, 17) + timedelta(days=n)
        rows += [
            VolumeRow(day, "kudos", "social", 3 + n % 3),
            VolumeRow(day, "service_issue", "social", 2),
            VolumeRow(day, "feature_request", "app-reviews", 1 + n % 2),
            VolumeRow(day, "sales_lead", "web-form", 1),
        ]
    return tuple(rows)


@pytest.fixture(scope="module")
def data() -> ReportData:
    """Figures built by hand, with hostile public text in every free-text place."""
    quote = Quote(HOSTILE_QUOTE, "javascript:alert(1)", NOW - timedelta(days=2))
    return ReportData(
        period_start=SINCE,
        period_end=NOW,
        volume=_volume(),
        backlog=(
            BacklogItem("b1", "kudos", "social", NOW - timedelta(hours=5)),
            BacklogItem("b2", "sales_lead", "web-form", NOW - timedelta(days=2)),
            BacklogItem("b3", "service_issue", "social", NOW - timedelta(days=9, hours=6)),
        ),
        timings=(
            TimingStat("product", "all", "to_handoff", 12, 0.5, 1.0),
            TimingStat("product", "all", "to_first_response", 10, 30.0, 70.0),
            TimingStat("product", "all", "to_resolution", 2, 400.0, 600.0),
            TimingStat("support", "all", "to_handoff", 28, 0.25, 0.75),
            TimingStat("support", "all", "to_first_response", 27, 3.5, 11.0),
            TimingStat("support", "all", "to_resolution", 20, 26.0, 90.0),
        ),
        feature_groups=(
            FeatureGroup("Offline mode for the Android app", 9, 7, ("app-reviews", "social")),
            FeatureGroup('=HYPERLINK("http://x") $5 plan <b>bold</b>', 4, 4, ("social",)),
        ),
        advocates=(
            Advocate("cus_a", HOSTILE_NAME, 6, 48_200, (quote,), "https://social.example/@eve"),
            Advocate(
                "cus_b",
                "Priya Raman",
                3,
                1_250,
                (Quote("Recommend Nimbus to every student I tutor.", "https://x.example/1", NOW),),
            ),
        ),
        at_risk=(
            AtRiskCustomer(
                "cus_c",
                "Marco Bellini",
                "talked of leaving or cancelling",
                2,
                1,
                NOW - timedelta(days=1),
                Quote("third sync failure this month, moving to Obsidian", None, NOW),
            ),
        ),
        stages={
            "discovery": 4,
            "evaluation": 6,
            "purchase": 3,
            "use_experience": 11,
            "bonded": 5,
            "advocate": 2,
            "at_risk": 1,
        },
        customers=32,
        bonds_made=5,
        bonds_broken=2,
        follow_ups={"praise": 5, "silence": 3, "new_complaint": 2, "pending": 1},
    )


@pytest.fixture(scope="module")
def written(data: ReportData, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    """The report of ``data``, written once for the tests that only read it."""
    return write_report(data, tmp_path_factory.mktemp("report"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(markup: str) -> _Tags:
    parser = _Tags()
    parser.feed(markup)
    return parser


# --- the report ---------------------------------------------------------------------------------


def test_report_writes_every_chart_with_the_csv_behind_it(
    data: ReportData, written: ReportResult
) -> None:
    result = written
    assert result.index == result.index.parent / "index.html" and result.index.exists()
    assert set(result.charts) == {
        "volume_by_label",
        "volume_by_source",
        "backlog_age",
        "handoff_times",
        "feature_requests",
        "advocates",
        "at_risk",
        "lifecycle_funnel",
    }
    for chart in result.charts.values():
        with Image.open(chart.png) as im:
            assert im.format == "PNG" and im.width >= 800 and im.height >= 250
        assert chart.csv.exists() and chart.alt
    by_label = _read_csv(result.charts["volume_by_label"].csv)
    assert len(by_label) == 14  # one row per day of the period, zero days included
    assert sum(int(r["total"]) for r in by_label) == data.mentions_total == 55 + 28 + 21 + 14
    assert sum(int(r["kudos"]) for r in by_label) == sum(
        v.count for v in data.volume if v.label == "kudos"
    )
    funnel = {
        r["stage"]: int(r["customers"]) for r in _read_csv(result.charts["lifecycle_funnel"].csv)
    }
    assert funnel == dict(data.stages)
    backlog = {r["waiting"]: int(r["total"]) for r in _read_csv(result.charts["backlog_age"].csv)}
    assert backlog == {"under 1 day": 1, "1-3 days": 1, "3-7 days": 0, "over 7 days": 1}
    advocates = _read_csv(result.charts["advocates"].csv)
    assert [(a["name"], a["reach"]) for a in advocates] == [
        (HOSTILE_NAME, "48200"),
        ("Priya Raman", "1250"),
    ]
    features = _read_csv(result.charts["feature_requests"].csv)
    # A cell a spreadsheet would run as a formula is defused.
    assert features[1]["request"].startswith("'=HYPERLINK")
    times = _read_csv(result.charts["handoff_times"].csv)
    assert {(t["department"], t["measure"]): t["median_hours"] for t in times}[
        ("support", "to_first_response")
    ] == "3.5"


def test_report_escapes_public_text_and_unsafe_links(written: ReportResult) -> None:
    markup = written.index.read_text(encoding="utf-8")
    page = _parse(markup)
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed")]
    assert not [a for t, a in page.tags if t == "img" and "onerror" in a]
    hrefs = [a.get("href") or "" for t, a in page.tags if t == "a"]
    assert not [
        h for h in hrefs if not h.startswith(("https://", "http://")) and not h.endswith(".csv")
    ]
    assert "https://social.example/@eve" in hrefs  # a safe profile link stays
    text = "".join(page.text)
    assert HOSTILE_NAME in text and HOSTILE_QUOTE in text  # shown as typed, not run
    for src in (a["src"] for t, a in page.tags if t == "img" and a.get("src")):
        assert src and (written.index.parent / src).exists()  # relative PNGs next to the page


def render_in_chromium(
    index: Path, tmp_path: Path, width: int, height: int
) -> tuple[np.ndarray, str, Path]:
    """Open ``index`` in headless Chromium: the screenshot's pixels, the rendered DOM, the PNG."""
    flags = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={width},{height}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", index.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*flags, "--dump-dom", index.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    with Image.open(shot) as im:
        assert im.size == (width, height)
        pixels = np.asarray(im.convert("RGB"), dtype=np.int32)
    return pixels, dom, shot


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed: run `make chromium` as root (make test does it "
    "where it can) or `apt-get install chromium`",
)
def test_report_renders_in_headless_chromium(
    data: ReportData, written: ReportResult, tmp_path: Path
) -> None:
    width, height = 1280, 2400
    pixels, dom, shot = render_in_chromium(written.index, tmp_path, width, height)

    assert shot.stat().st_size > 40_000
    non_white = float((pixels.sum(axis=2) < 720).mean())
    assert non_white > 0.05, f"the page looks blank ({non_white:.1%} non-white)"
    # The charts were loaded and drawn: the kudos green of the volume chart is on screen.
    green = int((np.abs(pixels - np.array([0x00, 0x9E, 0x73])).max(axis=2) < 25).sum())
    assert green > 2_000, f"{green} chart-green pixels: were the PNGs loaded?"

    body = _parse(dom)
    text = re.sub(r"\s+", " ", " ".join(body.text))
    assert f"{data.mentions_total:,} mentions in the period" in text
    assert "32 customers who wrote" in text
    assert "5 / 2 bonds made / broken" in text
    assert "3.5 h median first reply from support" in text
    assert "3 waiting for review (oldest 9.2 days)" in text
    assert "To first reply" in text and "3.5 h / 11.0 h (27)" in text  # support's cell
    assert "Offline mode for the Android app" in text
    assert "48,200" in text and "Priya Raman" in text and "Marco Bellini" in text
    assert HOSTILE_NAME in text  # rendered as text by the browser
    assert "pwned" not in (re.search(r"<title>(.*?)</title>", dom) or ["", ""])[1]
    assert "<script" not in dom.lower()


def test_an_empty_period_still_makes_a_readable_report(tmp_path: Path) -> None:
    empty = ReportData(period_start=NOW - timedelta(days=7), period_end=NOW)
    result = write_report(empty, tmp_path)
    text = re.sub(r"\s+", " ", " ".join(_parse(result.index.read_text(encoding="utf-8")).text))
    assert "Nothing to show for this period." in text
    assert "0 mentions in the period" in text
    assert all(c.png.stat().st_size > 5_000 for c in result.charts.values())


def test_build_report_data_from_the_engines() -> None:
    def m(item: str, days: float, handle: str, label: str, text: str, **kw: object) -> Mention:
        return Mention(
            item,
            "social",
            SINCE + timedelta(days=days),
            platform="twitter",
            handle=handle,
            label=label,
            text=text,
            **kw,
        )  # type: ignore[arg-type]

    mentions = [
        m("1", 1, "@ann", "service_issue", "sync broken"),
        m("2", 3, "@ann", "kudos", "fixed in a day, thank you", url="https://x.example/2"),
        m("3", 5, "@ann", "kudos", "I recommend nimbus to my whole class", followers=900),
        m("4", 2, "@bob", "service_issue", "cannot log in"),
        m("5", 6, "@bob", "service_issue", "still cannot log in, nobody replies"),
        m("6", 4, "@cy", "feature_request", "please add dark mode"),
        m("7", 5, "@dee", "feature_request", "dark mode please!!"),
        m("8", 7, "@eli", "feature_request", "export to csv"),
        m("9", -30, "@old", "kudos", "before the period"),
    ]
    outcomes = [
        HandoffOutcome(
            "1",
            "support",
            SINCE + timedelta(days=1, hours=1),
            SINCE + timedelta(days=1, hours=2),
            SINCE + timedelta(days=2),
            "resolved",
        ),
        HandoffOutcome("4", "support", SINCE + timedelta(days=2, hours=1)),
    ]
    res = resolve_profiles(mentions)
    lcs = assign_stages(res.profiles, outcomes, now=NOW)
    data = build_report_data(mentions, res.profiles, lcs, outcomes, [], since=SINCE, now=NOW)
    assert data.mentions_total == 8 and data.customers == 5
    assert data.stages["advocate"] == 1 and data.stages["at_risk"] == 1
    assert (data.bonds_made, data.bonds_broken) == (1, 1)  # ann's fix; bob's ticket never answered
    assert data.follow_ups["praise"] == 1
    assert [(g.title, g.count) for g in data.feature_groups] == [
        ("please add dark mode", 2),
        ("export to csv", 1),
    ]
    (ann,) = data.advocates
    assert (ann.praise_count, ann.reach) == (2, 900)
    assert ann.quotes[0].text.startswith("I recommend")  # the recommendation is the best quote
    (bob,) = data.at_risk
    assert (bob.name, bob.unresolved) == ("bob", 2)
    support = data.timing("support", "to_first_response")
    assert support is not None and support.count == 1 and support.median_hours == pytest.approx(2.0)


# --- the digest ---------------------------------------------------------------------------------


def test_digest_blocks_validate_and_fit_slack_limits(
    data: ReportData, written: ReportResult
) -> None:
    digest = build_digest(data, written.charts)
    assert check_blocks(digest.blocks) == []
    assert 5 <= len(digest.blocks) <= 50
    for raw in digest.blocks:
        parsed = Block.parse(dict(raw))
        assert parsed is not None
        parsed.validate_json()  # slack_sdk's own model validation
        assert parsed.to_dict() == raw
    posted = json.dumps(digest.blocks)
    # Public text never becomes a mention or a link.
    assert "<!channel>" not in posted and "<@U024BE7LH>" not in posted
    assert "&lt;!channel&gt;" in posted
    assert "javascript:" not in posted
    assert "Use &amp; experience" in posted  # our own text is escaped too
    text = " ".join(
        b.get("text", {}).get("text", "") for b in digest.blocks if b["type"] == "section"
    )
    fields = " ".join(f["text"] for b in digest.blocks for f in b.get("fields", []))
    assert "*Mentions*\n118" in fields and "*Bonds made / broken*\n5 / 2" in fields
    assert "3.5 h median" in text and "Offline mode for the Android app (9)" in text
    assert [f.key for f in digest.files] == ["volume_by_label", "handoff_times", "lifecycle_funnel"]
    images = [b for b in digest.blocks if b["type"] == "image"]
    assert [b["slack_file"]["id"] for b in images] == [PENDING + f.key for f in digest.files]


def test_digest_with_uploaded_file_ids_and_failed_uploads(
    data: ReportData, written: ReportResult
) -> None:
    digest = build_digest(data, written.charts)
    blocks = digest.with_file_ids({"volume_by_label": "F0AAA", "lifecycle_funnel": "F0CCC"})
    images = [b for b in blocks if b["type"] == "image"]
    assert [b["slack_file"] for b in images] == [{"id": "F0AAA"}, {"id": "F0CCC"}]
    assert len(blocks) == len(digest.blocks) - 1  # the chart whose upload failed is left out
    assert check_blocks(blocks) == []


def test_digest_bounds_huge_public_text(data: ReportData, tmp_path: Path) -> None:
    long = "&<>" * 2000
    huge = ReportData(
        period_start=data.period_start,
        period_end=data.period_end,
        volume=data.volume,
        feature_groups=tuple(FeatureGroup(long + str(n), 10 - n, 1, ("s",)) for n in range(5)),
        advocates=tuple(
            Advocate(f"cus_{n}", long, 1, 1, (Quote(long, "https://e.example/|>x", NOW),))
            for n in range(5)
        ),
        at_risk=tuple(AtRiskCustomer(f"cus_r{n}", long, long, 1, 0, NOW, None) for n in range(5)),
        stages=data.stages,
    )
    digest = build_digest(huge, write_report(huge, tmp_path).charts)
    assert check_blocks(digest.blocks) == []
    posted = json.dumps(digest.blocks)
    assert "e.example/|" not in posted  # a URL that would break <url|label> is not linked
    for b in digest.blocks:
        if b["type"] == "section" and "text" in b:
            # Truncation never leaves half an escape behind.
            assert not re.search(r"&(a|am|l|g)?…", b["text"]["text"])


def test_digest_names_cannot_format_the_message_and_links_are_never_cut(
    data: ReportData, tmp_path: Path
) -> None:
    # A '*' in a public name ended our bold early ("*Eve* :rotating_light: *SECURITY ALERT*"), and
    # the section's 3,000-character cut fell inside a <url|link>, leaving a bare public URL.
    name = "Eve* :rotating_light: *SECURITY ALERT\n> forged"
    url = "https://e.example/" + "a" * 1900
    advocates = tuple(
        Advocate(f"cus_{n}", name, 3, 10, (Quote("love it", url, NOW),)) for n in range(3)
    )
    at_risk = (AtRiskCustomer("cus_r", name, "2 unresolved issues", 2, 0, NOW, None),)
    odd = ReportData(
        period_start=data.period_start,
        period_end=data.period_end,
        volume=data.volume,
        advocates=advocates,
        at_risk=at_risk,
        stages=data.stages,
    )
    digest = build_digest(odd, write_report(odd, tmp_path).charts)
    assert check_blocks(digest.blocks) == []
    sections = [b["text"]["text"] for b in digest.blocks if b["type"] == "section" and "text" in b]
    (advocates_text,) = [t for t in sections if t.startswith("*Advocates*")]
    (risk_text,) = [t for t in sections if t.startswith("*At risk*")]
    for text in (advocates_text, risk_text):
        # The name is plain text on one line: no bold of ours around it, no line of its own.
        assert "• Eve* :rotating_light: *SECURITY ALERT &gt; forged:" in text
        assert "*Eve" not in text and "\n&gt; forged" not in text
    # Whole lines only: every link that starts also ends, and what did not fit is counted.
    assert advocates_text.count("<https://") == advocates_text.count("|link>") >= 1
    assert advocates_text.endswith("more")


def test_check_blocks_catches_what_slack_would_refuse() -> None:
    ok = {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}
    assert check_blocks([ok] * 50) == []
    assert check_blocks([ok] * 51) == ["51 blocks (limit 50)"]
    problems = check_blocks(
        [
            {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11},
            {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}},
            {
                "type": "image",
                "alt_text": "a",
                "image_url": "https://e.example/a.png",
                "slack_file": {"id": "F1"},
            },
            {"type": "not_a_block"},
        ]
    )
    assert len(problems) == 5, problems
    assert problems[0].startswith("block 0 (section)") and problems[2].startswith(
        "block 2 (header)"
    )


def test_dry_run_preview_is_written_to_the_outbox(
    data: ReportData, written: ReportResult, tmp_path: Path
) -> None:
    digest = build_digest(data, written.charts)
    outbox = tmp_path / "outbox" / "marketing-channel"
    path = write_digest_preview(digest, outbox, channel="#marketing", key="digest-2026-11-30")
    assert path == outbox / "digest-2026-11-30.json"
    body = json.loads(path.read_text(encoding="utf-8"))
    assert body["channel"] == "#marketing" and body["kind"] == "digest"
    assert body["blocks"] == list(digest.blocks) and body["text"] == digest.text
    for f in body["files"]:
        with Image.open(outbox / f["path"]) as im:
            assert im.format == "PNG"
    assert not list(outbox.glob("*.tmp"))
    # Written again: replaced, not duplicated.
    write_digest_preview(digest, outbox, channel="#marketing", key="digest-2026-11-30")
    assert sorted(p.name for p in outbox.iterdir()) == [
        "digest-2026-11-30",
        "digest-2026-11-30.json",
    ]


def test_the_demo_customers_fill_every_part_of_the_report(tmp_path: Path) -> None:
    """The bundled recurring customers (answer-key labels) show every stage, bonds and advocates."""
    from tests.test_customers import DEMO, DEMO_CONFIG, DEMO_NOW, DEMO_SOURCE, _demo_mentions

    with (DEMO / "expected_customer_labels.csv").open(encoding="utf-8") as f:
        labels = {r["id"]: r["label"] for r in csv.DictReader(f)}
    mentions = _demo_mentions(labels)
    outcomes, _ = load_outcomes(DEMO / "handoff_outcomes.jsonl", DEMO_SOURCE)
    res = resolve_profiles(mentions)
    lifecycles = assign_stages(res.profiles, outcomes, config=DEMO_CONFIG, now=DEMO_NOW)
    since = min(m.created_at for m in mentions)
    data = build_report_data(
        mentions, res.profiles, lifecycles, outcomes, [], since=since, now=DEMO_NOW
    )
    result = write_report(data, tmp_path)
    funnel = {
        r["stage"]: int(r["customers"]) for r in _read_csv(result.charts["lifecycle_funnel"].csv)
    }
    assert all(funnel.values()), funnel
    assert len(data.advocates) >= 3 and data.bonds_made >= 5 and data.bonds_broken >= 5
    assert data.feature_groups and data.feature_groups[0].count >= 2
    assert {t.department for t in data.timings} >= {"support", "sales", "product"}
    digest = build_digest(data, result.charts)
    assert check_blocks(digest.blocks) == []
