"""A folder of trained models with an ``active`` pointer: add, list, promote, roll back, resolve.

Layout of the registry folder (``models.registry`` in the configuration)::

    <root>/versions/m-20261129-140502-1a2b3c4d/   a loadable model folder (Classifier.load)
        registry.json                             created, parent, data counts, metrics, decision
        triage_meta.json, config.cfg, ...         as `triage train` writes them
    <root>/active.json                            {"active": VERSION | null, "history": [...], ...}
    <root>/.staging-*/                            a model being trained (ignored, cleaned up)

Crash safety: a version appears in ``versions/`` by one ``rename`` of a complete folder (its
metadata written first), and ``active.json`` is replaced by writing a temporary file, fsyncing it,
renaming it over the old one and fsyncing the folder. A crash at any point leaves either the old
pointer or the new one, never half of one; a temporary file left behind is ignored and removed by
the next write. Read-modify-write of the pointer holds an exclusive lock on ``<root>/.lock``, so a
scheduled retrain and a person running ``triage models promote`` cannot lose each other's change.

The active model is the last one promoted; with none promoted (or after rolling back past the
first promotion) it is the model that ships in ``classifiers/model``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifiers.model import COMPONENT, DEFAULT_MODEL_DIR, META_FILE
from triage.spool import fsync_dir, write_json_atomic

ACTIVE_FILE = "active.json"
VERSION_FILE = "registry.json"
VERSIONS_DIR = "versions"
STAGING_PREFIX = ".staging-"
SHIPPED = "shipped"
"""How the shipped model is named where a version is expected (``parent``, ``champion``)."""


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (unknown version, nothing to roll back to, ...)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(slots=True)
class ModelVersion:
    """One registered model and what the registry knows about it."""

    version: str
    path: Path
    created_at: str
    parent: str | None = None
    """The model that was active when this one was trained (``shipped`` for the shipped one)."""
    data: dict[str, Any] = field(default_factory=dict)
    """What it was trained on: counts per kind of data and per source."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Its scores on the retrain loop's evaluation slices."""
    decision: dict[str, Any] = field(default_factory=dict)
    """The gate's verdict when it was trained (promoted or not, and why)."""
    active: bool = False

    def to_json(self) -> dict[str, Any]:
        """The shape ``triage models list --json`` prints for one version."""
        return {
            "version": self.version,
            "path": str(self.path),
            "created_at": self.created_at,
            "parent": self.parent,
            "data": self.data,
            "metrics": self.metrics,
            "decision": self.decision,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class ActiveModel:
    """The model commands use when no ``--model`` is given."""

    path: Path
    version: str
    """A registry version, or :data:`SHIPPED`."""

    @property
    def shipped(self) -> bool:
        """True when nothing has been promoted (or everything was rolled back)."""
        return self.version == SHIPPED


class Registry:
    """The model registry in one folder (created on first write).

    Example:
        >>> reg = Registry(Path("models"))                      # doctest: +SKIP
        >>> with reg.staging() as tmp:                          # doctest: +SKIP
        ...     train(examples, tmp)
        ...     v = reg.add(tmp, parent=reg.active().version)
        >>> reg.promote(v.version)                              # doctest: +SKIP
    """

    def __init__(self, root: str | Path, shipped: Path = DEFAULT_MODEL_DIR) -> None:
        """Open the registry at ``root``; ``shipped`` is the model used when none is active."""
        self.root = Path(root)
        self.shipped = Path(shipped)

    # -- the pointer -------------------------------------------------------------------------

    @property
    def pointer_path(self) -> Path:
        """The ``active.json`` file."""
        return self.root / ACTIVE_FILE

    def _pointer(self) -> dict[str, Any]:
        path = self.pointer_path
        if not path.exists():
            return {"active": None, "history": [], "events": []}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Atomic replacement means this only happens when someone edited the file by hand.
            raise RegistryError(f"{path} is unreadable ({exc}); fix or delete it") from exc
        if not isinstance(data, dict) or not isinstance(data.get("history", []), list):
            raise RegistryError(f"{path} is not a registry pointer; fix or delete it")
        data.setdefault("history", [])
        data.setdefault("events", [])
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write_pointer(self, data: dict[str, Any]) -> None:
        data["updated_at"] = _now().isoformat()
        write_json_atomic(self.pointer_path, data)
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        # Only ours can be in flight while we hold the lock: anything else is a crash's leftover.
        for tmp in self.root.glob(f".{ACTIVE_FILE}.*.tmp"):
            tmp.unlink(missing_ok=True)

    def active_version(self) -> str | None:
        """The promoted version in use, or None when the shipped model is."""
        value = self._pointer().get("active")
        return str(value) if value else None

    def active(self) -> ActiveModel:
        """Resolve the model to use: the last promoted version, else the shipped model.

        Raises:
            RegistryError: When the pointer names a version whose folder is gone (an explicit
                error: silently falling back would change every routing decision unannounced).
        """
        version = self.active_version()
        if version is None:
            return ActiveModel(self.shipped, SHIPPED)
        path = self.version_path(version)
        if not (path / META_FILE).exists():
            raise RegistryError(
                f"the active model {version} is missing from {path.parent}; "
                "`triage models rollback` or `triage models promote VERSION` to choose another"
            )
        return ActiveModel(path, version)

    def history(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first (``action``, ``version``, ``from``, ``at``)."""
        return list(self._pointer()["events"])

    def promote(self, version: str, *, reason: str = "", by: str = "") -> ModelVersion:
        """Make ``version`` the active model (the current one is kept for :meth:`rollback`).

        Raises:
            RegistryError: Unknown or incomplete version.
        """
        model = self.get(version)
        with self._locked():
            data = self._pointer()
            current = data.get("active")
            if current == version:
                return model
            data["history"].append(current)
            data["active"] = version
            data["events"].append(
                {
                    "action": "promote",
                    "version": version,
                    "from": current or SHIPPED,
                    "at": _now().isoformat(),
                    "reason": reason,
                    "by": by,
                }
            )
            self._write_pointer(data)
        model.active = True
        return model

    def rollback(self, *, reason: str = "", by: str = "") -> ActiveModel:
        """Go back to the model that was active before the last promotion.

        Repeated rollbacks walk further back; past the first promotion, the shipped model.

        Raises:
            RegistryError: When nothing was ever promoted (the shipped model is active).
        """
        with self._locked():
            data = self._pointer()
            if not data["history"]:
                raise RegistryError("nothing to roll back: the shipped model is active")
            current = data.get("active")
            previous = data["history"].pop()
            if previous is not None and not (self.version_path(previous) / META_FILE).exists():
                raise RegistryError(f"cannot roll back to {previous}: its folder is gone")
            data["active"] = previous
            data["events"].append(
                {
                    "action": "rollback",
                    "version": previous or SHIPPED,
                    "from": current or SHIPPED,
                    "at": _now().isoformat(),
                    "reason": reason,
                    "by": by,
                }
            )
            self._write_pointer(data)
        return self.active()

    # -- versions ------------------------------------------------------------------------------

    def version_path(self, version: str) -> Path:
        """The folder of ``version`` (whether or not it exists)."""
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"not a version name: {version!r}")
        return self.root / VERSIONS_DIR / version

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder to train into, removed afterwards unless :meth:`add` moved it in."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def add(
        self,
        model_dir: Path,
        *,
        parent: str | None = None,
        data: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        decision: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> ModelVersion:
        """Register a trained model folder (moved in; it must be on the registry's file system).

        The model's ``triage_meta.json`` ``version`` becomes the registry version, so every
        prediction records it (the recipe's own name is kept as ``recipe_version``).

        Returns:
            The new version (not active: see :meth:`promote`).
        """
        meta_path = model_dir / META_FILE
        if not meta_path.exists():
            raise RegistryError(f"{model_dir} is not a triage model (no {META_FILE})")
        when = (now or _now()).astimezone(UTC)
        version = self._name(model_dir, when)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["recipe_version"] = meta.get("recipe_version", meta.get("version"))
        meta["version"] = version
        write_json_atomic(meta_path, meta)
        _rewrite_card(model_dir, meta)
        info = ModelVersion(
            version=version,
            path=self.version_path(version),
            created_at=when.replace(microsecond=0).isoformat(),
            parent=parent,
            data=data or {},
            metrics=metrics or {},
            decision=decision or {},
        )
        self._write_info(model_dir, info)
        target = self.version_path(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # One rename: the version is either absent or complete (never half-copied).
            os.rename(model_dir, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Another file system: copy next to the versions first, then rename as above.
            with self.staging() as tmp:
                copy = tmp / "model"
                shutil.copytree(model_dir, copy)
                os.rename(copy, target)
        fsync_dir(target.parent)
        return info

    def _name(self, model_dir: Path, when: datetime) -> str:
        weights = model_dir / COMPONENT / "model"
        source = weights if weights.exists() else model_dir / META_FILE
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
        base = f"m-{when:%Y%m%d-%H%M%S}-{digest}"
        name, n = base, 1
        while self.version_path(name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def _write_info(self, folder: Path, info: ModelVersion) -> None:
        record = info.to_json()
        record.pop("path")
        record.pop("active")
        write_json_atomic(folder / VERSION_FILE, record)

    def update(
        self,
        version: str,
        *,
        metrics: dict[str, Any] | None = None,
        decision: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Record metrics or a decision on a registered version (atomically)."""
        info = self.get(version)
        if metrics is not None:
            info.metrics = metrics
        if decision is not None:
            info.decision = decision
        self._write_info(info.path, info)
        return info

    def get(self, version: str) -> ModelVersion:
        """One version's record.

        Raises:
            RegistryError: When there is no complete model of that name.
        """
        path = self.version_path(version)
        if not (path / META_FILE).exists():
            known = ", ".join(v.version for v in self.versions()[:5])
            raise RegistryError(
                f"no model {version!r} in {self.root}" + (f" (newest: {known})" if known else "")
            )
        try:
            record = json.loads((path / VERSION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}  # a model folder copied in by hand: still usable, just undescribed
        return ModelVersion(
            version=version,
            path=path,
            created_at=str(record.get("created_at", "")),
            parent=record.get("parent"),
            data=record.get("data", {}),
            metrics=record.get("metrics", {}),
            decision=record.get("decision", {}),
            active=self.active_version() == version,
        )

    def versions(self) -> list[ModelVersion]:
        """Every complete version, newest first, with the active one flagged."""
        folder = self.root / VERSIONS_DIR
        if not folder.is_dir():
            return []
        names = sorted((p.name for p in folder.iterdir() if (p / META_FILE).exists()), reverse=True)
        return [self.get(name) for name in names]

    def prune(self, keep: int = 10) -> list[str]:
        """Delete old versions beyond the newest ``keep``, never the active one or its history.

        Returns:
            The versions deleted.
        """
        with self._locked():
            data = self._pointer()
            protected = {data.get("active"), *data["history"]}
            removed = []
            for info in self.versions()[keep:]:
                if info.version not in protected:
                    shutil.rmtree(info.path)
                    removed.append(info.version)
        for leftover in self.root.glob(f"{STAGING_PREFIX}*"):
            # Staging folders of crashed trainings (a live one is younger than a day).
            if datetime.now().timestamp() - leftover.stat().st_mtime > 86_400:
                shutil.rmtree(leftover, ignore_errors=True)
        return removed


def _rewrite_card(model_dir: Path, meta: dict[str, Any]) -> None:
    """Regenerate the model card under the registry version (and any policy kept from a champion)."""
    from classifiers.card import model_card

    try:
        card = model_card(meta)
    except (KeyError, TypeError):
        return  # a model from an older recipe: its card stays as it was written
    (model_dir / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def resolve_active_model(registry_dir: str | Path | None) -> ActiveModel:
    """The model to use when no ``--model`` is given: the registry's active one, else shipped.

    Args:
        registry_dir: The configured registry folder; None (not configured) means the shipped
            model.
    """
    if registry_dir is None:
        return ActiveModel(DEFAULT_MODEL_DIR, SHIPPED)
    return Registry(registry_dir).active()


def active_model_for(model: str | Path | None, registry_dir: str | Path | None) -> ActiveModel:
    """The model a configuration classifies with: a pinned ``model`` folder, else the active one.

    Args:
        model: The configuration's ``model:`` (or ``TRIAGE_MODEL``); it wins when set (version
            ``configured``).
        registry_dir: The configured registry folder (see :func:`resolve_active_model`).
    """
    if model is not None:
        return ActiveModel(Path(model), "configured")
    return resolve_active_model(registry_dir)
