"""The learning loop wired in: corrections in the store, the ``models:`` section, the commands.

Real DuckDB files, the real CLI app, the shipped spaCy model; the retrain itself is tested in
tests/test_learning_loop.py (slow).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from classifiers.corrections import resolve_latest
from classifiers.fitting import CONFIG_DIR
from classifiers.model import DEFAULT_MODEL_DIR, Classifier
from classifiers.registry import SHIPPED, Registry
from flows.learning import (
    active_model,
    registry_for,
    retrain_settings,
    stored_corrections,
)
from flows.settings import load_config
from flows.triage import classifier_for
from tests.learning_domain import domain_rows, write_csv
from triage.cli import app
from triage.config import ConfigError
from triage.models import Mention
from triage.servers.slack_app import _queue_view
from triage.store import SCHEMA_VERSION, open_store

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """Nothing here runs a flow: no Prefect test server for this module (overrides conftest)."""
    yield


T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _config(tmp_path: Path, models: dict[str, object] | None = None, **extra: object) -> Path:
    """A minimal configuration (one file source) with a ``models:`` section."""
    (tmp_path / "drops").mkdir(exist_ok=True)
    doc: dict[str, object] = {
        "database": str(tmp_path / "triage.duckdb"),
        "sources": [{"name": "forum", "type": "file", "path": "drops"}],
        **extra,
    }
    if models is not None:
        doc["models"] = models
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_import_reports_counts_keeps_provenance_and_the_latest_wins(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    rows = domain_rows(30, seed=3)
    first = write_csv(tmp_path / "first.csv", rows)
    code, out = _cli("corrections", "import", "--input", first, "--config", cfg, "--json")
    assert code == 0, out
    assert json.loads(out) == {
        "read": 30,
        "added": 30,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "repeated": 0,
        "errors": [],
    }
    # The same file again changes nothing.
    code, out = _cli("corrections", "import", "--input", first, "--config", cfg)
    assert code == 0 and "0 added, 0 updated, 30 unchanged" in out
    # A later file relabels five texts (one of them twice: its last row wins), one row is bad.
    later = [{**r, "label": "other" if r["label"] != "other" else "kudos"} for r in rows[:5]]
    lines = [json.dumps(r) for r in later]
    lines.insert(0, json.dumps({**rows[0], "label": "sales_lead"}))
    lines.append('{"text": "no label here"}')
    second = tmp_path / "second.jsonl"
    second.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out = _cli("corrections", "import", "--input", second, "--config", cfg, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["updated"], report["repeated"], report["rejected"]) == (5, 1, 1)
    labels = "kudos, sales_lead, feature_request, service_issue, other"
    assert report["errors"] == [f"line {len(lines)}: missing label (expected one of {labels})"]
    # Every row is kept with its provenance; the current label is the latest one.
    with duckdb.connect(str(tmp_path / "triage.duckdb"), read_only=True) as con:
        kinds = con.execute(
            "SELECT provenance_kind, provenance, source, count(*), min(created_at) IS NOT NULL "
            "FROM corrections GROUP BY ALL ORDER BY 2"
        ).fetchall()
        version = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert version == (SCHEMA_VERSION,)
    assert kinds == [
        ("file", str(first.resolve()), "keyboard_forum", 30, True),
        ("file", str(second.resolve()), "keyboard_forum", 5, True),
    ]
    config = load_config(cfg)
    with open_store(config.database) as store:
        current = {c.text: c.label for c in resolve_latest(stored_corrections(store, config))}
    assert len(current) == 30
    assert current == {r["text"]: r["label"] for r in rows} | {r["text"]: r["label"] for r in later}


def test_an_unreadable_file_exits_2_and_an_all_bad_file_exits_1(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("body,category\nhello,kudos\n", encoding="utf-8")
    code, out = _cli("corrections", "import", "--input", bad, "--config", cfg)
    assert code == 2 and "no 'text' or 'label' column" in out
    useless = tmp_path / "useless.csv"
    useless.write_text("text,label\nhello,praise\n", encoding="utf-8")
    code, out = _cli("corrections", "import", "--input", useless, "--config", cfg)
    assert code == 1 and "unknown label 'praise'" in out


def test_slack_relabels_spam_marks_and_reroutes_are_corrections(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    mentions = [
        Mention(
            source="forum", external_id=str(n), text=f"post number {n} about pricing", created_at=T0
        )
        for n in range(4)
    ]
    ids = [m.id for m in mentions]
    import pyarrow as pa

    with open_store(config.database) as store:
        store.insert_items(mentions)
        # What review/apply.py writes for a relabel and a spam mark ...
        store.add_training_examples(
            pa.Table.from_pylist(
                [
                    {
                        "item_id": ids[0],
                        "label": "sales_lead",
                        "previous_label": "kudos",
                        "decided_by": "U0ANA",
                        "decided_at": T0,
                    },
                    {
                        "item_id": ids[1],
                        "label": "other",
                        "previous_label": "kudos",
                        "decided_by": "U0BEN",
                        "decided_at": T0 + timedelta(minutes=1),
                    },
                ]
            )
        )
        # ... and for reroutes: to support (one label goes there), and one that keeps its label.
        decisions = [
            (ids[2], "support", "kudos", "U0CAT"),
            (ids[3], "marketing", "kudos", "U0DAN"),
        ]
        store.insert_review_decisions(
            [
                {
                    "item_id": item,
                    "decision_id": f"d{n}",
                    "action": "reroute",
                    "value": dept,
                    "user_id": user,
                    "decided_at": T0 + timedelta(minutes=2 + n),
                    "before_label": before,
                    "after_label": before,
                    "after_department": dept,
                    "after_state": "released",
                }
                for n, (item, dept, before, user) in enumerate(decisions)
            ]
        )
        found = stored_corrections(store, config)
    got = {
        (c.item_id, c.label, c.provenance_kind, c.provenance, c.source, c.previous_label)
        for c in found
    }
    assert got == {
        (ids[0], "sales_lead", "slack", "U0ANA", "forum", "kudos"),
        (ids[1], "other", "slack", "U0BEN", "forum", "kudos"),
        (ids[2], "service_issue", "slack", "U0CAT", "forum", "kudos"),
    }
    assert all(c.text.startswith("post number") for c in found)


def test_models_section_is_validated_and_reaches_the_settings(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        {
            "registry": "reg",
            "min_new_corrections": 50,
            "retrain": {"epochs": 2, "folds": 2, "training_files": ["extra.csv"]},
            "gate": {"max_p": 0.01, "label_tolerance": 0.1},
            "drift": {"window": 14, "k": 3.0},
        },
    )
    config = load_config(cfg)
    assert config.models is not None
    assert config.models.registry == tmp_path / "reg"
    assert config.models.min_new_corrections == 50
    settings = retrain_settings(config)
    assert (settings.epochs, settings.folds) == (2, 2)
    assert settings.training_files == (tmp_path / "extra.csv",)
    assert settings.gate.max_p == 0.01 and settings.gate.label_tolerance == 0.1
    # No architecture named: None, i.e. the active model's own (classifiers.retrain).
    assert settings.config_path is None
    named = load_config(_config(tmp_path, {"retrain": {"architecture": "bow"}}))
    assert retrain_settings(named).config_path == CONFIG_DIR / "textcat_bow.cfg"
    unknown = load_config(_config(tmp_path, {"retrain": {"architecture": "transformer"}}))
    with pytest.raises(ConfigError, match="unknown architecture 'transformer' \\(one of: bow"):
        retrain_settings(unknown)
    from flows.drift import drift_settings

    assert drift_settings(config).window == 14 and drift_settings(config).k == 3.0
    # Default: models/ beside the database.
    assert load_config(_config(tmp_path)).models.registry == tmp_path / "models"  # type: ignore[union-attr]
    # Unknown keys, bad values and unknown destinations are refused at load.
    for models, message in (
        ({"regsitry": "x"}, "models.regsitry"),
        ({"gate": {"max_p": 2}}, "models.gate.max_p"),
        ({"destination": "nowhere"}, "models.destination"),
        ({"retrain": {"architecture": "../bow"}}, "models.retrain.architecture"),
    ):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            load_config(_config(tmp_path, models))


def _register_copy(registry: Registry) -> str:
    """A loadable model registered under a new version (a copy of the shipped one)."""
    with registry.staging() as tmp:
        folder = tmp / "model"
        shutil.copytree(DEFAULT_MODEL_DIR, folder)
        return registry.add(folder, parent=SHIPPED).version


def test_models_commands_and_the_active_model_everywhere(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"registry": "reg"})
    config = load_config(cfg)
    registry = registry_for(config)
    code, out = _cli("models", "list", "--json", "--config", cfg)
    assert code == 0 and [m["version"] for m in json.loads(out)["models"]] == [SHIPPED]
    code, out = _cli("models", "rollback", "--config", cfg)
    assert code == 1 and "nothing to roll back" in out
    version = _register_copy(registry)
    code, out = _cli("models", "promote", "nope", "--config", cfg)
    assert code == 2 and "no model 'nope'" in out
    code, out = _cli("models", "promote", version, "--config", cfg)
    assert code == 0 and version in out
    listed = json.loads(_cli("models", "list", "--json", "--config", cfg)[1])["models"]
    assert [(m["version"], m["active"]) for m in listed] == [(version, True), (SHIPPED, False)]
    # classify and the flow's classifier follow the pointer, with no restart in between.
    texts = tmp_path / "in.jsonl"
    texts.write_text('{"id": 1, "text": "love the new keyboard"}\n', encoding="utf-8")
    out_file = tmp_path / "out.jsonl"

    def classified_by() -> str:
        code, out = _cli("classify", "-i", texts, "-o", out_file, "--config", cfg)
        assert code == 0, out
        return str(json.loads(out_file.read_text().splitlines()[0])["model_version"])

    assert active_model(config).version == version
    assert classified_by() == version
    assert classifier_for(config).version == version
    # The Slack app's App Home and /triage say which model classifies.
    with open_store(config.database):
        pass
    assert f"model `{version}`" in _queue_view(config)[-1]["elements"][0]["text"]
    code, out = _cli("models", "rollback", "--config", cfg)
    assert code == 0 and "shipped" in out
    shipped = Classifier.load(DEFAULT_MODEL_DIR).version
    assert classified_by() == shipped
    assert classifier_for(config).version == shipped
    assert f"model `{SHIPPED}`" in _queue_view(config)[-1]["elements"][0]["text"]
    # An explicit --model still wins.
    code, out = _cli(
        "classify", "-i", texts, "-o", out_file, "--model", registry.version_path(version)
    )
    assert code == 0 and json.loads(out_file.read_text())["model_version"] == version


def test_the_drift_baseline_summed_in_sql_equals_the_engines_daily_stats(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa

    from classifiers.drift import daily_stats
    from flows.drift import _baseline_day
    from flows.triage import prediction_table
    from triage.models import LABELS

    config = load_config(_config(tmp_path))
    clf = Classifier.load(DEFAULT_MODEL_DIR)
    rng = np.random.default_rng(3)
    with open_store(config.database) as store:
        for day in range(4):
            for source in ("forum", "mail"):
                n = 15 + 7 * day
                when = T0 + timedelta(days=day, hours=23, minutes=59)  # late: the UTC day counts
                mentions = [
                    Mention(source=source, external_id=f"{day}-{k}", text=f"t {k}", created_at=when)
                    for k in range(n)
                ]
                store.insert_items(mentions)
                scores = rng.dirichlet(np.ones(len(LABELS)), size=n)
                ids = pa.array([m.id for m in mentions])
                store.insert_predictions(prediction_table(ids, scores, clf, when))
        start, end = T0 - timedelta(days=1), T0 + timedelta(days=10)
        engine = daily_stats(store.drift_predictions(start))
        summed = [_baseline_day(r) for r in store.drift_daily(start, end, LABELS)]
    assert len(engine) == len(summed) == 8
    for a, b in zip(engine, summed, strict=True):
        assert (a.source, a.day, a.items) == (b.source, b.day, b.items)
        assert (a.review_rate, a.mean_top_score, a.top_score_sd) == (
            b.review_rate,
            b.mean_top_score,
            b.top_score_sd,
        )
        assert a.label_share == b.label_share
