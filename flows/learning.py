"""The learning loop wired to the product: corrections from the store, the active model, retrain.

The engines are in ``classifiers/`` (corrections, registry, retrain, gate, drift); this module
connects them to the configuration (``models:``), the store and the review channel, for the
``triage corrections``/``retrain``/``models`` commands, the triage flow and the retrain flow.

Where corrections come from:

* files: ``triage corrections import`` stores them in the ``corrections`` table;
* Slack: reviewers' relabels and spam marks are read from ``training_examples`` (spam is
  ``other``), reroutes from ``review_decisions``. A reroute counts as a correction only when the
  new department is the one department a single label is routed to by an unconditional rule
  (with the default routing: support → ``service_issue``, sales → ``sales_lead``, product →
  ``feature_request``, marketing → ``kudos``); a reroute to a department no single label owns
  says nothing certain about the label and is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifiers.correction_files import ImportReport, import_file
from classifiers.corrections import (
    Correction,
    from_arrow,
    from_reviews,
    to_arrow,
)
from classifiers.fitting import config_for
from classifiers.gate import GatePolicy
from classifiers.model import DEFAULT_MODEL_DIR
from classifiers.registry import SHIPPED, ActiveModel, Registry, active_model_for
from classifiers.retrain import Decision, RetrainSettings, new_corrections_since_last, retrain
from triage.config import Config, ConfigError, ModelsConfig
from triage.destinations import Destination
from triage.store import Store, location, open_store


def models_config(config: Config) -> ModelsConfig:
    """The ``models:`` section (defaults when a configuration was built by hand)."""
    return config.models or ModelsConfig(
        registry=location.spool_base(config.database).parent / "models"
    )


def registry_for(config: Config) -> Registry:
    """The configured model registry (``models.registry``; default ``models/`` by the database)."""
    return Registry(models_config(config).registry)


def active_model(config: Config) -> ActiveModel:
    """The model to classify with: ``model:`` / ``TRIAGE_MODEL`` when set, else the registry's.

    Read on every call (one small file), so a promotion or rollback applies to the next run
    without restarting anything.

    Raises:
        classifiers.registry.RegistryError: When the active version's folder is gone.
    """
    return active_model_for(config.model, models_config(config).registry)


def retrain_settings(config: Config, *, promote: bool = True) -> RetrainSettings:
    """The :class:`RetrainSettings` of ``models.retrain`` and ``models.gate``.

    Raises:
        triage.config.ConfigError: ``models.retrain.architecture`` names no config in
            ``classifiers/configs/``.
    """
    m = models_config(config)
    r = dict(m.retrain)
    files = tuple(config.resolve(p) for p in r.pop("training_files", []) or [])
    arch = r.pop("architecture", None)
    try:
        config_path = config_for(arch) if arch else None
    except ValueError as exc:
        raise ConfigError(f"models.retrain.architecture: {exc}") from None
    return RetrainSettings(
        training_files=files,
        config_path=config_path,
        gate=GatePolicy(**m.gate),
        promote=promote,
        keep_versions=m.keep_versions,
        **r,
    )


def reroute_labels(config: Config) -> dict[str, str]:
    """Department → the one label an unconditional rule sends there (see the module docstring)."""
    owners: dict[str, set[str]] = {}
    for rule in config.rules:
        if (
            rule.department
            and rule.label
            and not (rule.source or rule.keywords or rule.min_score is not None)
        ):
            owners.setdefault(rule.department, set()).add(rule.label)
    return {dept: next(iter(labels)) for dept, labels in owners.items() if len(labels) == 1}


def stored_corrections(store: Store, config: Config) -> list[Correction]:
    """Every correction: imported files, reviewers' relabels and spam marks, and reroutes."""
    import pyarrow as pa

    from classifiers.corrections import CORRECTIONS_SCHEMA

    imported = store.imported_corrections()
    out = from_arrow(pa.Table.from_pylist(imported, schema=CORRECTIONS_SCHEMA))
    out += from_reviews(store.review_corrections())
    owners = reroute_labels(config)
    reroutes = [
        {**r, "label": owners[r["department"]]}
        for r in store.review_reroutes()
        if r["department"] in owners and r["previous_label"] != owners[r["department"]]
    ]
    out += from_reviews(reroutes)
    return out


def import_corrections(
    config: Config, path: str | Path, *, default_source: str = "import"
) -> ImportReport:
    """Read a corrections file and store what it changes (latest wins; counts in the report).

    Raises:
        classifiers.correction_files.CorrectionsFileError: The file cannot be read at all.
    """
    with open_store(config.database) as store, store.transaction():
        report = import_file(
            path,
            stored_corrections(store, config),
            default_source=default_source,
            now=datetime.now(UTC),
        )
        store.insert_corrections(to_arrow(report.to_store))
    return report


def load_corrections(config: Config) -> list[Correction]:
    """Every stored correction (the store is opened only for the read)."""
    with open_store(config.database) as store:
        return stored_corrections(store, config)


def run_retrain(
    config: Config,
    *,
    promote: bool = True,
    log: Callable[[str], None] = print,
    corrections: list[Correction] | None = None,
) -> Decision:
    """Retrain from every stored correction (or those given), gate, and promote when better.

    The store is closed before training starts: a triage run may write meanwhile.
    """
    if corrections is None:
        corrections = load_corrections(config)
    return retrain(
        corrections, registry_for(config), retrain_settings(config, promote=promote), log=log
    )


def retrain_due(config: Config) -> tuple[bool, int]:
    """Whether ``models.min_new_corrections`` corrections arrived since the last decision."""
    new = new_corrections_since_last(registry_for(config), load_corrections(config))
    return new >= models_config(config).min_new_corrections, new


def describe_active(active: ActiveModel) -> str:
    """``m-2026... (registry)`` or ``shipped (classifiers/model)`` for people."""
    if active.version == SHIPPED:
        return f"shipped ({DEFAULT_MODEL_DIR})"
    return f"{active.version} ({active.path})"


def version_rows(registry: Registry) -> list[dict[str, Any]]:
    """``triage models list --json``: the shipped model, then every version, newest first."""
    versions = [v.to_json() for v in registry.versions()]
    shipped: dict[str, Any] = {
        "version": SHIPPED,
        "path": str(registry.shipped),
        "created_at": None,
        "parent": None,
        "data": {},
        "metrics": {},
        "decision": {},
        "active": registry.active_version() is None,
    }
    return [*versions, shipped]


def announcer(config: Config) -> Destination | None:
    """The destination retrain decisions and drift alerts are posted to, or None.

    ``models.destination``, else ``review.destination`` (the review channel); without a Slack
    token it writes JSON previews like every Slack destination.
    """
    from triage.destinations import DESTINATION_TYPES

    name = models_config(config).destination or config.review_destination
    dest = config.destinations.get(name) if name else None
    if dest is None or dest.type not in ("slack", "preview", "testimonials"):
        return None
    return DESTINATION_TYPES[dest.type](dest, config)
