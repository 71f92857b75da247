"""The model registry: versions, promote, rollback, the active pointer and its crash safety."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classifiers.model import DEFAULT_MODEL_DIR, META_FILE, Classifier
from classifiers.registry import (
    ACTIVE_FILE,
    SHIPPED,
    Registry,
    RegistryError,
    resolve_active_model,
)


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """These engines do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


def _trained(reg: Registry, tag: str, when: datetime, loadable: bool = False) -> str:
    """Register a model folder as if trained at ``when``.

    ``loadable``: a full copy of the shipped model (Classifier.load works); otherwise only the
    files the registry reads, with distinct weights bytes (copying 21 MB per version is slow).
    """
    with reg.staging() as tmp:
        folder = tmp / "model"
        if loadable:
            shutil.copytree(DEFAULT_MODEL_DIR, folder)
        else:
            (folder / "textcat_multilabel").mkdir(parents=True)
            (folder / "textcat_multilabel" / "model").write_bytes(tag.encode())
            shutil.copy(DEFAULT_MODEL_DIR / META_FILE, folder / META_FILE)
        return reg.add(folder, parent=reg.active().version, data={"tag": tag}, now=when).version


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_nothing_promoted_means_the_shipped_model(registry: Registry) -> None:
    active = registry.active()
    assert active.shipped and active.path == DEFAULT_MODEL_DIR
    assert resolve_active_model(None) == active
    assert resolve_active_model(registry.root).version == SHIPPED
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()


def test_versions_promote_and_rollback_restore_the_previous_model(registry: Registry) -> None:
    a = _trained(registry, "a", datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC), loadable=True)
    b = _trained(registry, "b", datetime(2026, 5, 8, 10, 0, 0, tzinfo=UTC), loadable=True)
    assert a.startswith("m-20260501-100000-") and len(a) == len("m-20260501-100000-") + 8
    assert [v.version for v in registry.versions()] == [b, a]
    assert not any(v.active for v in registry.versions())
    info = registry.get(b)
    assert (info.parent, info.data, info.created_at) == (
        SHIPPED,
        {"tag": "b"},
        "2026-05-08T10:00:00+00:00",
    )
    # The model itself records the registry version, so every prediction does.
    assert Classifier.load(info.path).version == b
    assert (info.path / "MODEL_CARD.md").read_text("utf-8").startswith(f"# Model card: {b}\n")
    assert json.loads((info.path / META_FILE).read_text())["recipe_version"].startswith("textcat_")

    registry.promote(a, reason="first")
    registry.promote(b, reason="second")
    assert resolve_active_model(registry.root).version == b
    assert [v.version for v in registry.versions() if v.active] == [b]

    back = registry.rollback(reason="b routes badly")
    assert back.version == a
    assert Classifier.load(resolve_active_model(registry.root).path).version == a
    # Rolling back past the first promotion returns to the shipped model; then nothing is left.
    assert registry.rollback().shipped
    with pytest.raises(RegistryError):
        registry.rollback()
    events = [(e["action"], e["version"], e["from"]) for e in registry.history()]
    assert events == [
        ("promote", a, SHIPPED),
        ("promote", b, a),
        ("rollback", a, b),
        ("rollback", SHIPPED, a),
    ]


def test_unknown_versions_are_refused_with_the_known_ones(registry: Registry) -> None:
    a = _trained(registry, "a", datetime(2026, 5, 1, tzinfo=UTC))
    with pytest.raises(RegistryError, match=f"no model 'm-nope'.*{a}"):
        registry.promote("m-nope")
    with pytest.raises(RegistryError, match="not a version name"):
        registry.promote("../../etc")


def test_a_crash_mid_promote_leaves_the_old_pointer(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _trained(registry, "a", datetime(2026, 5, 1, tzinfo=UTC))
    b = _trained(registry, "b", datetime(2026, 5, 2, tzinfo=UTC))
    registry.promote(a)
    before = registry.pointer_path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("power cut")  # the process dies after writing the temp file, before rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        registry.promote(b)
    monkeypatch.undo()
    leftovers = list(registry.root.glob(f".{ACTIVE_FILE}.*.tmp"))
    assert len(leftovers) == 1  # the half-done write, complete but never renamed
    assert registry.pointer_path.read_bytes() == before
    assert registry.active().version == a
    # A fresh process sees the old model and the next write sweeps the leftover away.
    assert Registry(registry.root).active().version == a
    registry.promote(b)
    assert registry.active().version == b
    assert not list(registry.root.glob(f".{ACTIVE_FILE}.*.tmp"))
    assert registry.rollback().version == a


def test_a_torn_temp_file_does_not_corrupt_the_pointer(registry: Registry) -> None:
    a = _trained(registry, "a", datetime(2026, 5, 1, tzinfo=UTC))
    registry.promote(a)
    # What a crash in the middle of write() leaves: half a JSON document under a temp name.
    (registry.root / f".{ACTIVE_FILE}.999.deadbeef.tmp").write_text('{"active": "m-20')
    assert registry.active().version == a
    assert [v.version for v in registry.versions()] == [a]


def test_a_crash_mid_training_leaves_no_version(registry: Registry) -> None:
    with pytest.raises(RuntimeError), registry.staging() as tmp:
        shutil.copytree(DEFAULT_MODEL_DIR, tmp / "model")
        raise RuntimeError("killed while training")
    assert registry.versions() == []
    # A staging folder a killed process could not clean up is not a version either.
    (registry.root / ".staging-dead" / "model").mkdir(parents=True)
    shutil.copy(DEFAULT_MODEL_DIR / META_FILE, registry.root / ".staging-dead" / "model")
    assert registry.versions() == []


def test_a_hand_broken_pointer_is_a_clear_error(registry: Registry) -> None:
    registry.root.mkdir(parents=True)
    registry.pointer_path.write_text("{not json")
    with pytest.raises(RegistryError, match="active.json is unreadable"):
        registry.active()


def test_a_deleted_active_version_is_an_error_not_a_silent_fallback(registry: Registry) -> None:
    a = _trained(registry, "a", datetime(2026, 5, 1, tzinfo=UTC))
    registry.promote(a)
    shutil.rmtree(registry.version_path(a))
    with pytest.raises(RegistryError, match=f"the active model {a} is missing"):
        registry.active()
    # The way out: rolling back to the shipped model.
    assert registry.rollback().shipped


def test_prune_keeps_the_active_model_and_its_history(registry: Registry) -> None:
    versions = [_trained(registry, str(i), datetime(2026, 5, 1 + i, tzinfo=UTC)) for i in range(5)]
    registry.promote(versions[0])
    registry.promote(versions[1])
    removed = registry.prune(keep=2)
    assert sorted(removed) == [versions[2]]
    assert {v.version for v in registry.versions()} == {
        versions[0],
        versions[1],
        versions[3],
        versions[4],
    }
