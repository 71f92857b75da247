"""Retrain and gate: better models through, poisoned and tiny imports refused, rollback works."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from classifiers.correction_files import import_file
from classifiers.corrections import Correction
from classifiers.fitting import CONFIG_DIR
from classifiers.model import DEFAULT_MODEL_DIR, META_FILE, Classifier
from classifiers.registry import SHIPPED, Registry, resolve_active_model
from classifiers.retrain import (
    ARCH_CONFIG,
    STARTER_SLICE,
    Decision,
    RetrainSettings,
    challenger_config,
    decisions,
    new_corrections_since_last,
    render,
    retrain,
)
from tests.learning_domain import as_corrections, domain_rows, write_csv

# Fast training for tests: three epochs, two cross-source folds (the recipe and architecture are
# otherwise the shipped model's).
FAST = RetrainSettings(epochs=3, folds=2)
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """These engines do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


def _imported(path: Path, now: datetime = T0) -> list[Correction]:
    report = import_file(path, [], now=now)
    assert report.rejected == 0
    return report.to_store


def _accuracy(clf: Classifier, rows: list[dict[str, str]]) -> float:
    preds = clf.predict([r["text"] for r in rows])
    return sum(p.label == r["label"] for p, r in zip(preds, rows, strict=True)) / len(rows)


def test_a_tiny_import_is_refused_and_no_model_is_trained(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    corrections = _imported(write_csv(tmp_path / "tiny.csv", domain_rows(30, seed=1)))
    decision = retrain(corrections, registry, FAST, log=lambda _m: None)
    assert not decision.promoted
    assert decision.challenger is None
    assert "not enough corrections to judge a new model" in decision.reason
    assert "more corrections will do" in decision.reason
    assert decision.data["corrections"] == 30 and decision.data["eval_slice"] < 20
    # Nothing was trained or registered; the shipped model is still the one in use.
    assert registry.versions() == []
    assert resolve_active_model(registry.root).version == SHIPPED
    # The refusal is on record, in the shape `triage retrain --json` prints.
    logged = decisions(registry)
    assert len(logged) == 1 and logged[0]["promoted"] is False
    assert {"promoted", "reason", "champion", "challenger"} <= set(logged[0])
    assert logged[0]["champion"]["version"] == SHIPPED
    assert new_corrections_since_last(registry, corrections) == 0


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Decision, list[Correction]]:
    """300 corrections from the keyboard-shop domain imported, then one retrain."""
    tmp = tmp_path_factory.mktemp("domain")
    corrections = _imported(write_csv(tmp / "keyboards.csv", domain_rows(300, seed=1)))
    registry = Registry(tmp / "models")
    return registry, retrain(corrections, registry, FAST, log=lambda _m: None), corrections


@pytest.mark.slow
def test_domain_corrections_promote_a_measurably_better_model(
    domain: tuple[Registry, Decision, list[Correction]],
) -> None:
    registry, decision, corrections = domain
    assert decision.promoted, render(decision)
    assert decision.challenger is not None
    version = decision.challenger["version"]
    assert registry.active().version == version
    active = resolve_active_model(registry.root)
    assert active.version == version and active.path == registry.version_path(version)
    # The gate judged it on the frozen slice it never trained on ...
    slice_before = decision.champion["metrics"]["corrections"]["macro_f1"]
    slice_after = decision.challenger["metrics"]["corrections"]["macro_f1"]
    assert slice_after >= slice_before + 0.15
    assert all(c["passed"] for c in decision.checks)
    # ... and it is better on fresh posts from the same domain that nobody corrected.
    seen = {c.text for c in corrections}
    fresh = [r for r in domain_rows(400, seed=99) if r["text"] not in seen][:200]
    shipped, new = Classifier.load(DEFAULT_MODEL_DIR), Classifier.load(active.path)
    assert new.version == version
    assert _accuracy(new, fresh) >= _accuracy(shipped, fresh) + 0.15
    # The JSON object `triage retrain --json` prints.
    out = json.loads(json.dumps(decision.to_json()))
    assert out["promoted"] is True
    assert out["champion"]["version"] == SHIPPED
    assert out["challenger"]["version"] == version
    assert set(out["challenger"]["metrics"]) == {"corrections", "general", STARTER_SLICE}
    assert out["data"]["train_corrections"] + out["data"]["eval_slice"] == 300
    # The shipped model saw every starter row: that slice is reported, not compared.
    assert STARTER_SLICE not in out["settings"]["compared"]
    # No architecture in the settings: the challenger was built like the champion.
    shipped_arch = json.loads((DEFAULT_MODEL_DIR / META_FILE).read_text())["architecture"]
    assert out["settings"]["config"] == shipped_arch == new.meta["architecture"]
    info = registry.get(version)
    assert info.active and info.parent == SHIPPED and info.data["eval_slice"] > 0


def test_a_challenger_is_built_with_the_champions_architecture(tmp_path: Path) -> None:
    assert challenger_config(DEFAULT_MODEL_DIR) == CONFIG_DIR / "textcat_vectors.cfg"
    bow = tmp_path / "bow"
    bow.mkdir()
    (bow / META_FILE).write_text(json.dumps({"architecture": "textcat_bow.cfg"}))
    assert challenger_config(bow) == CONFIG_DIR / "textcat_bow.cfg"
    # A champion without metadata, or naming a config that is not here: the default one.
    assert challenger_config(tmp_path / "missing") == ARCH_CONFIG
    (bow / META_FILE).write_text(json.dumps({"architecture": "../../etc/passwd"}))
    assert challenger_config(bow) == ARCH_CONFIG
    assert ARCH_CONFIG == CONFIG_DIR / "textcat_vectors.cfg"


def test_library_default_architecture_is_the_shipped_one() -> None:
    """train() and fit_classifier() without a config train what ships and what the CLI trains."""
    import inspect

    from classifiers.fitting import DEFAULT_CONFIG, config_for
    from classifiers.train import fit_classifier, train
    from triage.cli.model import train as train_command

    shipped = json.loads((DEFAULT_MODEL_DIR / META_FILE).read_text())["architecture"]
    assert DEFAULT_CONFIG.name == shipped
    cli_default = inspect.signature(train_command).parameters["arch"].default
    assert config_for(cli_default) == DEFAULT_CONFIG
    for fn in (train, fit_classifier):
        assert inspect.signature(fn).parameters["config_path"].default == DEFAULT_CONFIG


@pytest.mark.slow
def test_rollback_restores_the_previous_model(
    domain: tuple[Registry, Decision, list[Correction]],
) -> None:
    registry, decision, _ = domain
    assert decision.challenger is not None
    registry.promote(decision.challenger["version"])
    texts = [r["text"] for r in domain_rows(50, seed=7)]
    promoted_labels = [p.label for p in Classifier.load(registry.active().path).predict(texts)]
    back = registry.rollback(reason="test")
    assert back.shipped
    restored = resolve_active_model(registry.root)
    assert restored.path == DEFAULT_MODEL_DIR
    labels = [p.label for p in Classifier.load(restored.path).predict(texts)]
    assert labels == [p.label for p in Classifier.load(DEFAULT_MODEL_DIR).predict(texts)]
    assert labels != promoted_labels
    registry.promote(decision.challenger["version"])  # leave the module's registry as found


@pytest.mark.slow
def test_a_poisoned_import_is_refused_with_the_reason(tmp_path: Path) -> None:
    rows = domain_rows(300, seed=1)
    labels = [r["label"] for r in rows]
    random.Random(4).shuffle(labels)
    poisoned = [{**r, "label": lab} for r, lab in zip(rows, labels, strict=True)]
    registry = Registry(tmp_path / "models")
    corrections = _imported(write_csv(tmp_path / "poisoned.csv", poisoned))
    decision = retrain(corrections, registry, FAST, log=lambda _m: None)
    assert not decision.promoted, render(decision)
    assert decision.reason.startswith("kept the champion:")
    failed = {c["name"] for c in decision.checks if not c["passed"]}
    assert "better on the correction slice" in failed
    assert "sign test" in decision.reason
    # Still the shipped model; the refused challenger stays registered for inspection.
    assert registry.active().shipped
    assert decision.challenger is not None
    assert [v.version for v in registry.versions()] == [decision.challenger["version"]]
    assert registry.get(decision.challenger["version"]).decision["gate_passed"] is False


@pytest.mark.slow
def test_too_few_rows_to_calibrate_keeps_the_champions_policy(
    domain: tuple[Registry, Decision, list[Correction]],
) -> None:
    registry, first, corrections = domain
    assert first.challenger is not None
    registry.promote(first.challenger["version"])
    champion = Classifier.load(registry.active().path)
    more = as_corrections(
        domain_rows(60, seed=21), T0 + timedelta(days=1), kind="slack", provenance="U0REVIEWER"
    )
    settings = RetrainSettings(epochs=3, folds=2, min_calibration_rows=10**6, promote=False)
    decision = retrain(corrections + more, registry, settings, log=lambda _m: None)
    assert decision.challenger is not None
    assert decision.challenger["calibration"]["policy"] == f"kept from {champion.version}"
    meta = json.loads(
        (registry.get(decision.challenger["version"]).path / META_FILE).read_text("utf-8")
    )
    assert meta["policy"] == champion.meta["policy"]
    assert meta["policy_from"] == champion.version
    # A dry run never moves the active model; a registry-trained champion is compared on the
    # starter rows both were trained without.
    assert registry.active().version == first.challenger["version"]
    assert not decision.promoted
    assert STARTER_SLICE in decision.settings["compared"]
    assert decision.champion["version"] == first.challenger["version"]
