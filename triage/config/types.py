"""The validated configuration as the pipeline reads it: plain typed records."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from triage.customers.stages import LifecycleConfig


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or inconsistent; the message says where."""


@dataclass(slots=True)
class SourceConfig:
    """One configured source: a connector type plus its settings."""

    name: str
    type: str
    settings: dict[str, Any]
    enabled: bool = True


@dataclass(slots=True)
class Rule:
    """A routing rule: when every given condition holds, the item goes to ``department``.

    ``department`` may be None: the item is kept and audited but handed to nobody.
    """

    department: str | None
    label: str | None = None
    source: str | None = None
    min_score: float | None = None
    keywords: tuple[str, ...] = ()
    name: str = ""


@dataclass(slots=True)
class DestinationConfig:
    """Where deliveries go: a Slack channel, a helpdesk, a CRM, a tracker or a webhook."""

    name: str
    type: str
    settings: dict[str, Any]


@dataclass(slots=True)
class DepartmentConfig:
    """How a department receives its items."""

    name: str
    destination: str | None
    # Auto handoff skips marketing's review for confident items (README, "Department handoffs").
    auto_handoff: bool = False
    # Further destinations that receive every handoff too (e.g. the CRM plus the sales channel).
    also: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class ReviewConfig:
    """The ``review:`` section: read once, at load, with the defaults the README documents."""

    # The decision spool; by default beside the database (``<database>.decisions.jsonl``), so
    # the review server and every flow run find the same file.
    spool: Path
    destination: str | None = None
    # None: never thread the review messages (README, "Marketing review in Slack").
    batch_threshold: int | None = None
    resurface_after: timedelta = timedelta(hours=24)


@dataclass(slots=True, frozen=True)
class CustomersConfig:
    """The ``customers:`` section (README, "Customers, lifecycle and reports")."""

    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    # Outcomes from an export: (JSON Lines file, the source whose items it describes).
    outcomes_file: tuple[Path, str] | None = None
    # Handoffs made longer ago than this are no longer read back.
    readback_window: timedelta = timedelta(days=90)
    report_since: timedelta = timedelta(days=30)
    digest_destination: str | None = None
    digest_period: timedelta = timedelta(days=7)
    # The file has a ``customers:`` section: `triage run` then ends with the customers per stage.
    configured: bool = False


@dataclass(slots=True, frozen=True)
class ModelsConfig:
    """The ``models:`` section: the registry folder and the learning loop's settings.

    ``retrain``, ``gate`` and ``drift`` are the validated sub-sections as plain dicts (the
    learning modules turn them into their settings objects).
    """

    registry: Path
    keep_versions: int = 10
    min_new_corrections: int = 200
    # The Slack destination for retrain decisions and drift alerts (None: review.destination).
    destination: str | None = None
    retrain: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class PrivacyConfig:
    """The ``privacy:`` section (README, "Privacy")."""

    # Order/account formats: mappings with name, pattern and ignore_case.
    patterns: tuple[dict[str, Any], ...] = ()
    # Languages the classifier was trained on; other languages (and unknown) go to review.
    languages: tuple[str, ...] = ("en",)
    # Language code (or "unknown") -> destination that receives those items instead.
    language_destinations: dict[str, str] = field(default_factory=dict)
    # Table -> how long raw text and author details are kept.
    retention: dict[str, timedelta] = field(default_factory=dict)


@dataclass(slots=True)
class Config:
    """The whole validated configuration."""

    path: Path
    # A DuckDB file, or a PostgreSQL URL (``postgresql://…``, see triage.store.location).
    database: Path | str
    sources: list[SourceConfig]
    rules: list[Rule]
    departments: dict[str, DepartmentConfig]
    destinations: dict[str, DestinationConfig]
    review: ReviewConfig
    thresholds: dict[str, float]
    # None: use the thresholds and margin the model was calibrated with.
    margin: float | None
    model: Path | None
    outbox_dir: Path
    max_attempts: int = 5
    # The Slack destination where dead-lettered deliveries are announced (``alerts.destination``).
    alerts_destination: str | None = None
    # Per label: True/False, or a minimum score, for handing off without marketing's review.
    # A label not listed falls back to its department's ``auto_handoff``.
    auto_handoff: dict[str, bool | float] = field(default_factory=dict)
    customers: CustomersConfig = field(default_factory=CustomersConfig)
    # None only for hand-built configurations; read_config always fills it in.
    models: ModelsConfig | None = None
    # None: the model's service watch (classifiers.model.service_watched); 1.0 all but turns it off.
    service_watch: float | None = None
    # Adapt each source's scores to its label mix (classifiers.adapt), estimated on its latest
    # ``adapt_history`` classified items and the new ones: each source to its one mix
    # (``source``), or each item to the mix of the items of its source most like it
    # (``neighbours``, as ``triage classify`` does; it costs a backlog more than it gains there).
    adapt_to_source: bool = True
    adapt_history: int = 500
    adapt_to: str = "source"
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def review_destination(self) -> str | None:
        """Where marketing reviews every routed item (``review.destination``)."""
        return self.review.destination

    def keep_in_clear(self, destination: str) -> tuple[str, ...]:
        """The kinds of personal data a destination sees in clear (none when unset)."""
        dest = self.destinations.get(destination)
        return tuple(dest.settings.get("keep_in_clear") or ()) if dest is not None else ()

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        """Resolve a path from the configuration relative to the configuration file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)
