"""The benchmark runs end to end at a small size and reports every field (timing is not asserted)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from triage.cli import app

REQUIRED = {"n", "e2e_per_s", "classifier_per_s", "ratio", "peak_rss_mb", "rerun_speedup", "stages"}


def test_bench_reports_every_field() -> None:
    result = CliRunner().invoke(app, ["bench", "--n", "2000", "--json", "--drain-messages", "50"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert REQUIRED <= set(report)
    assert report["n"] == 2000
    assert report["e2e_per_s"] > 0 and report["classifier_per_s"] > 0
    assert report["ratio"] == round(report["e2e_per_s"] / report["classifier_per_s"], 3)
    assert {"fetch_store", "classify", "route_enqueue", "orchestration"} <= set(report["stages"])
    assert report["peak_rss_mb"] > 0 and report["db_size_mb"] > 0
    # The second run over the same input is everything-already-seen: it creates nothing.
    assert report["second_run"]["created"] == 0
    # Reported, not timed: at 2,000 mentions both runs are mostly Prefect's fixed per-run cost, so
    # the speed-up is about 1 and may land either side of it (the target is measured at 100k).
    assert report["rerun_speedup"] > 0
    assert report["outbox_enqueued"] >= 2000 * 0.5
    assert report["drain"]["messages"] == 50 and report["drain"]["messages_per_s"] > 0
