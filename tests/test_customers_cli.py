"""The customers, report and digest commands over a real demo run (issue 16's wiring).

One module-wide demo store: the real triage flow over the bundled demo (deliveries left queued),
then ``triage customers``, ``triage report`` and ``triage digest`` through typer's runner, the
report rendered by headless Chromium and the digest posted to the strict fake Slack (files API).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_DIR
from tests.fakes.slack import FakeSlack
from tests.test_report import CHROMIUM, render_in_chromium
from triage.cli.app import app
from triage.customers.stages import STAGE_TITLES, STAGES
from triage.report.digest import check_blocks

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(configuration, database) of one demo run, shared by the module's tests."""
    from flows.triage import triage

    root = tmp_path_factory.mktemp("customers-demo")
    shutil.copytree(DEMO_DIR, root / "demo")
    config, db = root / "demo" / "triage.yaml", root / "triage.duckdb"
    triage(config_path=str(config), database=str(db), deliver=False)
    yield config, db


def cli(demo: tuple[Path, Path], *args: str) -> Any:
    config, db = demo
    return runner.invoke(app, [*args, "--config", str(config), "--db", str(db)])


def test_list_shows_every_stage_and_filters_by_stage(demo: tuple[Path, Path]) -> None:
    result = cli(demo, "customers", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["stage"] for r in rows} == set(STAGES)  # the demo shows every lifecycle stage
    assert len({r["id"] for r in rows}) == len(rows)
    at_risk = json.loads(cli(demo, "customers", "list", "--stage", "at_risk", "--json").output)
    assert at_risk and {r["stage"] for r in at_risk} == {"at_risk"}
    assert len(at_risk) == sum(r["stage"] == "at_risk" for r in rows)
    text = cli(demo, "customers", "list").output
    assert text.startswith(f"{len(rows)} customers: discovery ")
    bad = cli(demo, "customers", "list", "--stage", "loyal")
    assert bad.exit_code == 2 and "unknown stage 'loyal'" in bad.output


def test_show_a_customers_mentions_in_time_order_with_labels_and_handoffs(
    demo: tuple[Path, Path],
) -> None:
    result = cli(demo, "customers", "show", "lena.kowalski@fernway.example", "--json")
    assert result.exit_code == 0, result.output
    lena = json.loads(result.output)
    assert lena["id"].startswith("cus_")
    # The e-mail customer wrote by mail and through the web form: one profile.
    assert {m["platform"] for m in lena["mentions"]} == {"email", "web_form"}
    times = [m["at"] for m in lena["mentions"]]
    assert times == sorted(times)
    assert all(m["label"] for m in lena["mentions"])
    handoffs = [h for m in lena["mentions"] for h in m["handoffs"]]
    assert handoffs and {h["department"] for h in handoffs} <= {"support", "sales", "product"}
    # A bare handle finds the one customer who has it; the text view names the stage.
    text = cli(demo, "customers", "show", "@felix_builds").output
    assert "Felix Baumann" in text and "stage: " in text and "mentions:" in text
    missing = cli(demo, "customers", "show", "nobody@nowhere.example")
    assert missing.exit_code == 1 and "no customer" in missing.output


def test_manual_merge_joins_two_profiles_and_is_kept(demo: tuple[Path, Path]) -> None:
    def profile(ref: str) -> dict[str, Any]:
        out = cli(demo, "customers", "show", ref, "--json")
        assert out.exit_code == 0, out.output
        data: dict[str, Any] = json.loads(out.output)
        return data

    a, b = profile("app_store:sam_ortiz_77"), profile("twitter:@samortiz")
    assert a["id"] != b["id"]  # look-alikes stay apart until someone says otherwise
    before = len(json.loads(cli(demo, "customers", "list", "--json").output))
    assert a["first_seen"] < b["first_seen"]
    # Named by the newer profile's id, which the merge retires: the older id survives.
    merged = cli(demo, "customers", "merge", b["id"], "app_store:sam_ortiz_77")
    assert merged.exit_code == 0, merged.output
    assert merged.output.startswith(f"merged: {a['id']} now has 2 identities")
    after = profile("twitter:@samortiz")
    assert after == profile("app_store:sam_ortiz_77") and after["id"] == a["id"]
    assert len(after["mentions"]) == len(a["mentions"]) + len(b["mentions"])
    assert after["merged_by"] == ["manual"]
    assert len(json.loads(cli(demo, "customers", "list", "--json").output)) == before - 1
    again = cli(demo, "customers", "merge", "twitter:@samortiz", "app_store:sam_ortiz_77")
    assert again.exit_code == 0 and "already one customer" in again.output
    unknown = cli(demo, "customers", "merge", a["id"], "cus_000000000000")
    assert unknown.exit_code == 1 and "no customer 'cus_000000000000'" in unknown.output


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed: run `make chromium` as root or "
    "`apt-get install chromium`",
)
def test_report_command_renders_in_headless_chromium(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = cli(demo, "report", "--out", str(out), "--since", "120d")
    assert result.exit_code == 0, result.output
    index = out / "index.html"
    assert index.exists() and "open it in a browser" in result.output
    assert len(list(out.rglob("*.png"))) >= 6 and len(list(out.rglob("*.csv"))) >= 6
    pixels, dom, _ = render_in_chromium(index, tmp_path, 1280, 2400)
    assert float((pixels.sum(axis=2) < 720).mean()) > 0.05  # not a blank page
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    for stage in STAGES:
        assert STAGE_TITLES[stage].replace("&", "&amp;") in text, stage
    assert "mentions in the period" in text and "Felix Baumann" in text
    bad = cli(demo, "report", "--out", str(out), "--since", "a while")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_digest_dry_run_writes_the_preview_to_the_outbox(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    result = cli(demo, "digest", "--dry-run")
    assert result.exit_code == 0, result.output
    preview = tmp_path / "outbox" / "marketing-channel"
    body = json.loads(next(preview.glob("digest-*.json")).read_text(encoding="utf-8"))
    assert body["channel"] == "#marketing-kudos" and body["kind"] == "digest"
    assert check_blocks(body["blocks"]) == []
    assert [f["key"] for f in body["files"]]
    for f in body["files"]:
        assert (preview / f["path"]).stat().st_size > 1000  # the chart PNGs beside the JSON


def test_digest_preview_that_cannot_be_written_is_one_line(
    demo: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An outbox folder under a regular file ended the dry run in a NotADirectoryError traceback.
    blocker = tmp_path / "afile"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("TRIAGE_OUTBOX_DIR", str(blocker / "outbox"))
    result = cli(demo, "digest", "--dry-run")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"cannot write the digest preview under {blocker / 'outbox'}" in result.output
    assert f"{blocker} is a file, not a folder" in result.output


def test_digest_uploads_charts_with_the_files_api_and_posts_them(
    demo: tuple[Path, Path], fake_slack: FakeSlack
) -> None:
    result = cli(demo, "digest")
    assert result.exit_code == 0, result.output
    assert "posted the digest to #marketing-kudos" in result.output
    # The real upload flow, file by file: URL, bytes, completion; then one message.
    urls = fake_slack.calls_to("files.getUploadURLExternal")
    done = fake_slack.calls_to("files.completeUploadExternal")
    assert len(urls) == len(done) >= 3
    assert set(fake_slack.files.completed) == set(fake_slack.files.uploaded)
    (message,) = fake_slack.messages["C0MARKETING"]
    images = [b for b in message["blocks"] if b["type"] == "image"]
    assert {b["slack_file"]["id"] for b in images} == set(fake_slack.files.completed)
    assert check_blocks(message["blocks"]) == []


def test_digest_leaves_out_a_chart_whose_upload_failed(
    demo: tuple[Path, Path], fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("files.completeUploadExternal", status=500, times=4)
    result = cli(demo, "digest")
    assert result.exit_code == 0, result.output
    assert "failed" in result.output
    (message,) = fake_slack.messages["C0MARKETING"]
    images = [b for b in message["blocks"] if b["type"] == "image"]
    assert {b["slack_file"]["id"] for b in images} == set(fake_slack.files.completed)
    assert len(images) == len(fake_slack.calls_to("files.getUploadURLExternal")) - 1


def test_the_fake_refuses_an_image_of_a_file_never_uploaded(fake_slack: FakeSlack) -> None:
    from slack_sdk.errors import SlackApiError

    from triage.slack.client import make_client

    client = make_client(fake_slack.token)
    announced = client.files_getUploadURLExternal(filename="x.png", length=10)
    with pytest.raises(SlackApiError, match="file_not_found"):
        client.files_completeUploadExternal(files=[{"id": announced["file_id"]}])
    block = {"type": "image", "slack_file": {"id": announced["file_id"]}, "alt_text": "x"}
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        client.chat_postMessage(channel="#marketing-kudos", text="x", blocks=[block])
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.files_getUploadURLExternal(filename="x.png", length=0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("customers:\n  lifecycle: {product_name: [x]}\n", "product_name"),
        ("customers:\n  digest: {destination: nowhere}\n", "'nowhere' is not a configured"),
        ("customers:\n  digest: {period: weekly}\n", "expected a duration"),
        ("customers:\n  report_since: 30\n", "customers.report_since"),
        ("customers:\n  outcomes_file: {path: x.jsonl}\n", "source"),
        ("customers:\n  lifecycle: {rules: [{signal: churn, to: at_risk}]}\n", "unknown signal"),
    ],
)
def test_customers_configuration_is_checked_at_load(
    tmp_path: Path, section: str, message: str
) -> None:
    from flows.settings import load_config
    from triage.config import ConfigError

    config = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, config)
    text = (config / "triage.yaml").read_text(encoding="utf-8")
    text = text[: text.index("\ncustomers:")] + "\n" + section
    (config / "triage.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config / "triage.yaml")
