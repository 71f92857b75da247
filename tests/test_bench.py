"""The benchmark runs end to end at a small size and reports every field (timing is not asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from triage.cli import app

REQUIRED = {"n", "e2e_per_s", "classifier_per_s", "ratio", "peak_rss_mb", "rerun_speedup", "stages"}


def test_bench_reports_every_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The benchmark works in a temporary folder; --keep leaves it here for the checks below.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from flows.triage import _classifier

    _classifier.cache_clear()
    result = CliRunner().invoke(
        app, ["bench", "--n", "2000", "--json", "--drain-messages", "50", "--keep"]
    )
    # The warm-up, the flow and the bare-classifier reference use one loaded model: a second copy
    # would be warmed for nothing and counted twice in the peak RSS.
    assert _classifier.cache_info().currsize == 1

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert REQUIRED <= set(report)
    assert report["n"] == 2000
    # Rates are what their names say: mentions over the reported seconds.
    assert report["e2e_per_s"] == pytest.approx(2000 / report["e2e_seconds"], rel=1e-3, abs=0.1)
    assert report["ratio"] == pytest.approx(
        report["e2e_per_s"] / report["classifier_per_s"], abs=2e-3
    )
    # The flow classifies the same texts with the same model and does more: it cannot be faster.
    assert 0 < report["ratio"] < 1
    stages = report["stages"]
    assert set(stages) == {"fetch_store", "classify", "route_enqueue", "orchestration"}
    assert all(v >= 0 for v in stages.values()) and stages["classify"] > 0
    assert sum(stages.values()) == pytest.approx(report["e2e_seconds"], abs=0.01)
    assert report["peak_rss_mb"] > 100  # the spaCy model and Prefect alone are larger than that
    # Whether the peak includes torch (imported by thinc when installed) is said, not guessed.
    assert report["torch_loaded"] is ("torch" in sys.modules)
    # Reported, not timed: at 2,000 mentions both runs are mostly Prefect's fixed per-run cost, so
    # the speed-up is about 1 and may land either side of it (the target is measured at 100k).
    assert report["rerun_speedup"] == pytest.approx(
        report["e2e_seconds"] / report["second_run"]["seconds"], abs=0.06
    )

    # The counts against the benchmark's own database, counted here.
    (db,) = tmp_path.glob("triage-bench-*/bench.duckdb")
    with duckdb.connect(str(db), read_only=True) as con:
        q = lambda sql: con.execute(sql).fetchall()
        assert q("SELECT count(*), count(DISTINCT id) FROM items") == [(2000, 2000)]
        assert q("SELECT count(*) FROM predictions") == [(2000,)]
        # Items in a language the model was not trained on are reviewed whatever their label.
        routed = q(
            "SELECT count(*) FROM predictions p JOIN items i ON i.id = p.item_id "
            "WHERE p.label <> 'other' OR i.language <> 'en'"
        )[0][0]
        kinds = dict(q("SELECT kind, count(*) FROM outbox GROUP BY kind"))
        sent = q("SELECT count(*) FROM outbox WHERE state = 'sent'")[0][0]
    # Every routed item has one review message; `other` in English goes nowhere.
    assert kinds["review"] == routed > 1000
    assert report["outbox_enqueued"] == sum(kinds.values())
    # The second run over the same input is everything-already-seen: it creates nothing.
    assert report["second_run"]["created"] == 0
    assert report["drain"]["messages"] == sent == 50 and report["drain"]["messages_per_s"] > 0


ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from: the project's own files, without local state or caches.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "tests", "__pycache__", "*.egg-info", ".*_cache",
    ".hypothesis", "outbox", "reports", "models", "*.duckdb*", "*.wal",
)  # fmt: skip


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        args, check=False, capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )
    assert done.returncode == 0, f"{args[:3]}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_bench_installed_from_a_wheel_measures_delivery(tmp_path: Path) -> None:
    # Built and installed like a user's `pip install`: no source checkout, no tests package.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        cwd=src,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("feedback_triage-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # The dependencies come from this environment's site-packages (offline, and fast); the
    # project itself only from the wheel (the editable install's finder is not loaded this way).
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = sysconfig.get_paths()["purelib"]
    (Path(site.stdout.strip()) / "_dependencies.pth").write_text(deps + "\n", encoding="utf-8")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    where = _run([str(python), "-c", "import triage.cli.bench as b; print(b.__file__)"], tmp_path)
    assert where.stdout.strip().startswith(str(venv))

    bench = _run(
        [str(venv / "bin" / "triage"), "bench", "--n", "500", "--json", "--drain-messages", "50"],
        cwd=tmp_path,
    )

    report = json.loads(bench.stdout[bench.stdout.index("{") :])
    assert report["n"] == 500
    assert "skipped" not in report["drain"]
    assert report["drain"]["messages"] == 50 and report["drain"]["messages_per_s"] > 0
