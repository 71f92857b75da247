"""The learning loop end to end (issue 15's tests): commands, real Prefect flows, a DuckDB file.

The domain is the keyboard shop of tests/learning_domain.py, which the shipped model handles
poorly. Training uses the recipe with fewer epochs and folds, set in the configuration's
``models.retrain`` as a user would (about 20-60 s a retrain on the shared machine).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml

from classifiers.model import DEFAULT_MODEL_DIR, Classifier
from classifiers.registry import SHIPPED
from flows.retrain import retrain as retrain_flow
from flows.settings import load_config
from flows.triage import prediction_table, run_triage
from tests.clirun import clean_env, run_cli
from tests.fakes.slack import FakeSlack
from tests.learning_domain import domain_rows, write_csv
from triage.models import LABELS, Mention
from triage.store import open_store

REVIEW_CHANNEL = "C0REVIEW"  # the fake's id of #feedback-review


def _workspace(tmp_path: Path, **models: Any) -> Path:
    """A configuration: one forum source from drops/, Slack announcements, fast retraining."""
    (tmp_path / "drops").mkdir()
    doc = {
        "database": str(tmp_path / "triage.duckdb"),
        "sources": [{"name": "keyboard-forum", "type": "file", "path": "drops"}],
        "destinations": {"announce": {"type": "slack", "channel": "#feedback-review"}},
        "models": {
            "registry": "models",
            "destination": "announce",
            "retrain": {"epochs": 3, "folds": 2},
            **models,
        },
    }
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _drop(cfg: Path, name: str, rows: list[dict[str, str]]) -> dict[str, str]:
    """Write posts as a file drop; return external id → gold label."""
    gold = {}
    with (cfg.parent / "drops" / name).open("w", encoding="utf-8") as fh:
        for n, row in enumerate(rows):
            ext = f"{Path(name).stem}-{n}"
            gold[ext] = row["label"]
            record = {
                "id": ext,
                "text": row["text"],
                "created_at": "2026-11-28T12:00:00Z",
                "url": f"https://forum.example/t/{ext}",
            }
            fh.write(json.dumps(record) + "\n")
    return gold


def _predictions(cfg: Path, gold: dict[str, str]) -> tuple[set[str], float]:
    """The model versions that classified the drop's items, and their accuracy."""
    with duckdb.connect(str(cfg.parent / "triage.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT i.external_id, p.label, p.model_version FROM predictions p "
            "JOIN items i ON i.id = p.item_id"
        ).fetchall()
    mine = [(label, version, gold[ext]) for ext, label, version in rows if ext in gold]
    assert len(mine) == len(gold)
    return {v for _, v, _ in mine}, sum(lab == g for lab, _, g in mine) / len(mine)


def _cli(cfg: Path, *args: str) -> Any:
    done = run_cli(*args, "--config", cfg, cwd=cfg.parent, env=clean_env())
    assert done.returncode == 0, f"triage {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def _fresh(n: int, seed: int, exclude: list[dict[str, str]]) -> list[dict[str, str]]:
    seen = {r["text"] for r in exclude}
    return [r for r in domain_rows(n * 2, seed=seed) if r["text"] not in seen][:n]


@pytest.mark.slow
def test_domain_corrections_promote_a_better_model_that_runs_use_and_rollback_restores(
    tmp_path: Path,
) -> None:
    cfg = _workspace(tmp_path)
    corrections = domain_rows(300, seed=1)
    before = _drop(cfg, "first.jsonl", _fresh(120, 50, corrections))
    run_triage(config_path=str(cfg), deliver=False)
    versions, shipped_accuracy = _predictions(cfg, before)
    shipped = Classifier.load(DEFAULT_MODEL_DIR).version
    assert versions == {shipped}

    done = _cli(
        cfg, "corrections", "import", "--input", str(write_csv(tmp_path / "c.csv", corrections))
    )
    assert "300 added" in done.stdout
    decision = json.loads(_cli(cfg, "retrain", "--json").stdout)
    assert decision["promoted"] is True, decision["reason"]
    version = decision["challenger"]["version"]
    assert decision["champion"]["version"] == SHIPPED
    champion, challenger = decision["champion"]["metrics"], decision["challenger"]["metrics"]
    assert challenger["corrections"]["macro_f1"] >= champion["corrections"]["macro_f1"] + 0.15
    listed = json.loads(_cli(cfg, "models", "list", "--json").stdout)["models"]
    assert [(m["version"], m["active"]) for m in listed] == [(version, True), (SHIPPED, False)]
    assert listed[0]["data"]["corrections"] == 300

    # The next run, in this same process (a long-lived worker: no restart), uses the new model
    # and routes the domain's fresh posts measurably better.
    after = _drop(cfg, "second.jsonl", _fresh(120, 77, corrections + [*domain_rows(240, 50)]))
    run_triage(config_path=str(cfg), deliver=False)
    versions, promoted_accuracy = _predictions(cfg, after)
    assert versions == {version}
    assert promoted_accuracy >= shipped_accuracy + 0.15, (shipped_accuracy, promoted_accuracy)

    # Rollback restores the shipped model, and the next run uses it.
    assert "shipped" in _cli(cfg, "models", "rollback").stdout
    again = _drop(cfg, "third.jsonl", _fresh(40, 91, corrections))
    run_triage(config_path=str(cfg), deliver=False)
    assert _predictions(cfg, again)[0] == {shipped}


@pytest.mark.slow
def test_a_poisoned_import_is_refused_by_the_scheduled_flow_and_announced(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    cfg = _workspace(tmp_path)
    rows = domain_rows(300, seed=1)
    labels = [r["label"] for r in rows]
    random.Random(4).shuffle(labels)
    poisoned = [{**r, "label": lab} for r, lab in zip(rows, labels, strict=True)]
    _cli(cfg, "corrections", "import", "--input", str(write_csv(tmp_path / "p.csv", poisoned)))
    # The deployment's flow, for real (Prefect test server), as the weekly schedule runs it.
    result = retrain_flow(config_path=str(cfg))
    assert result["promoted"] is False
    assert result["reason"].startswith("kept the champion:") and "sign test" in result["reason"]
    failed = {c["name"] for c in result["checks"] if not c["passed"]}
    assert "better on the correction slice" in failed
    assert load_config(cfg).models is not None
    listed = json.loads(_cli(cfg, "models", "list", "--json").stdout)["models"]
    assert [m["version"] for m in listed if m["active"]] == [SHIPPED]
    # Announced once in the review channel, with the comparison and the reason.
    posts = fake_slack.messages[REVIEW_CHANNEL]
    assert len(posts) == 1
    text = posts[0]["text"]
    assert "kept `shipped`" in text and "refused" in text
    assert "macro-F1" in text and "[FAIL] better on the correction slice" in text
    assert result["announced"] == f"{REVIEW_CHANNEL}:{posts[0]['ts']}"


def test_a_tiny_import_is_refused_and_the_due_check_waits(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    cfg = _workspace(tmp_path, min_new_corrections=50)
    tiny = write_csv(tmp_path / "tiny.csv", domain_rows(30, seed=2))
    _cli(cfg, "corrections", "import", "--input", str(tiny))
    decision = json.loads(_cli(cfg, "retrain", "--json").stdout)
    assert decision["promoted"] is False and decision["challenger"] is None
    assert "not enough corrections to judge a new model" in decision["reason"]
    assert "No model was trained" in decision["reason"]
    listed = json.loads(_cli(cfg, "models", "list", "--json").stdout)["models"]
    assert [m["version"] for m in listed] == [SHIPPED]
    # The on-demand deployment's check: nothing new since that decision, so it skips.
    result = retrain_flow(config_path=str(cfg), only_if_due=True)
    assert result == {
        "skipped": True,
        "reason": "0 new corrections since the last decision; a retrain needs 50",
    }
    assert fake_slack.messages[REVIEW_CHANNEL] == []


def _history(cfg: Path, days: int, per_day: int, now: datetime) -> None:
    """Past days of one source, all confident kudos (the band the watch learns)."""
    config = load_config(cfg)
    clf = Classifier.load(DEFAULT_MODEL_DIR)
    scores = np.full((per_day, len(LABELS)), 0.01)
    scores[:, LABELS.index("kudos")] = 0.96
    with open_store(config.database) as store:
        for d in range(days, 0, -1):
            when = now - timedelta(days=d)
            mentions = [
                Mention(
                    source="keyboard-forum",
                    external_id=f"h{d}-{n}",
                    text=f"day {d} post {n}: love it",
                    created_at=when,
                )
                for n in range(per_day)
            ]
            store.insert_items(mentions)
            ids = [m.id for m in mentions]
            store.insert_predictions(prediction_table(pa.array(ids), scores, clf, when))


def test_drift_after_a_run_is_announced_once_with_examples(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    cfg = _workspace(tmp_path)
    _history(cfg, days=8, per_day=25, now=datetime.now(UTC))
    # Today the stream changes: posts the shipped model finds hard, few of them kudos.
    _drop(cfg, "today.jsonl", domain_rows(40, seed=5))
    summary = run_triage(config_path=str(cfg))
    assert summary["drift"]["alerts"] >= 1 and summary["drift"]["announced"] >= 1
    posts = fake_slack.messages[REVIEW_CHANNEL]
    assert len(posts) == 1
    text = posts[0]["text"]
    today = datetime.now(UTC).date().isoformat()
    assert f"keyboard-forum on {today}: share of kudos down" in text
    assert "<https://forum.example/t/today-" in text  # examples link to the posts
    # The next run sees the same day outside its band: no second alert.
    summary = run_triage(config_path=str(cfg))
    assert summary["drift"] == {"alerts": 0, "announced": 0, "ref": None}
    assert len(fake_slack.messages[REVIEW_CHANNEL]) == 1
    with duckdb.connect(str(tmp_path / "triage.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT count(*), count(announced_at) FROM drift_alerts WHERE source = 'keyboard-forum'"
        ).fetchone()
    assert rows is not None and rows[0] == rows[1] == summary_alerts(posts[0])


def summary_alerts(post: dict[str, Any]) -> int:
    """How many alerts one drift message lists (one bullet each)."""
    return sum(line.startswith("• ") for line in post["text"].splitlines())
