"""The ``customers:``, ``models:`` and ``privacy:`` sections of the configuration file."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, field_validator

from triage.config.fields import _DURATION, NonEmpty, Score, Strict, parse_duration
from triage.customers.stages import LifecycleConfig


class OutcomesFile(Strict):
    """Handoff outcomes from an export (JSON Lines), for handoffs no API reads back."""

    path: NonEmpty = Field(description="JSON Lines file, relative to this configuration file")
    source: NonEmpty = Field(description="the configured source whose items it describes")


class Digest(Strict):
    """The weekly digest in Slack."""

    destination: NonEmpty | None = Field(
        default=None, description="Slack destination it is posted to (none: no digest)"
    )
    period: str = Field(default="7d", description="the span it covers: 7d, 14d")

    _period = field_validator("period", mode="before")(lambda value: _checked_duration(value))


def _checked_duration(value: Any) -> Any:
    if isinstance(value, str):
        parse_duration(value)  # raises ValueError with the reason
    return value


class Customers(Strict):
    """Customer profiles, lifecycle rules, read-back of handoffs, report and digest."""

    lifecycle: LifecycleConfig = Field(
        default_factory=LifecycleConfig, description="stage rules (README, Customers)"
    )
    outcomes_file: OutcomesFile | None = Field(
        default=None, description="handoff outcomes from a file instead of an API"
    )
    readback_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        default=90, description="read back handoffs made in the last this many days"
    )
    report_since: str = Field(default="30d", description="default period of `triage report`")
    digest: Digest = Field(default_factory=Digest)

    _since = field_validator("report_since", mode="before")(lambda value: _checked_duration(value))


class RetrainSection(Strict):
    """``models.retrain``: how a challenger is trained and what it is judged on."""

    eval_share: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        default=0.2, description="share of each source's corrections frozen for evaluation"
    )
    min_eval_rows: Annotated[int, Field(ge=1)] = Field(
        default=20, description="fewest corrections in the evaluation slice to judge a model on"
    )
    min_calibration_rows: Annotated[int, Field(ge=1)] = Field(
        default=500, description="fewest held-out rows to fit a new review policy on"
    )
    starter_holdout_share: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.1, description="share of the starter corpus no challenger trains on"
    )
    training_files: list[NonEmpty] = Field(
        default_factory=list, description="more labelled CSV/JSONL files or folders to train on"
    )
    seed: int | None = Field(default=None, description="training seed (default: the recipe's)")
    epochs: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="largest epoch count (default: the recipe's)"
    )
    folds: Annotated[int, Field(ge=2)] | None = Field(
        default=None, description="cross-source folds (default: the recipe's)"
    )
    architecture: str | None = Field(
        default=None,
        description=(
            "classifiers/configs/textcat_<name>.cfg to train with, e.g. vectors or bow "
            "(default: the active model's)"
        ),
    )

    @field_validator("architecture")
    @classmethod
    def _architecture_name(cls, value: str | None) -> str | None:
        # Only the form here: which configs exist is the classifiers' business, checked when the
        # retrain settings are built (flows.learning.retrain_settings).
        if value is not None and not value.isidentifier():
            raise ValueError(f"{value!r} is not an architecture name (e.g. vectors or bow)")
        return value


class GateSection(Strict):
    """``models.gate``: when a challenger may replace the active model."""

    max_p: Score = Field(default=0.05, description="largest sign-test p-value of the gain")
    label_tolerance: Score = Field(
        default=0.05, description="largest drop of one label's F1 on the correction slice"
    )
    slice_tolerance: Score = Field(
        default=0.05, description="largest macro-F1 drop on any other compared slice"
    )
    overall_tolerance: Score = Field(
        default=0.02, description="largest drop of the mean macro-F1 over the compared slices"
    )
    min_label_support: Annotated[int, Field(ge=1)] = Field(
        default=5, description="labels with fewer rows in the slice are reported, not judged"
    )


class DriftBands(Strict):
    """``models.drift``: per source and day, when a signal is outside its usual band."""

    enabled: StrictBool = Field(default=True, description="false: no drift check after runs")
    window: Annotated[int, Field(ge=1)] = Field(default=28, description="baseline days")
    min_history: Annotated[int, Field(ge=1)] = Field(
        default=7, description="baseline days needed before a source is judged"
    )
    k: Annotated[float, Field(gt=0)] = Field(
        default=4.0, description="band half-width in standard deviations"
    )
    min_items: Annotated[int, Field(ge=1)] = Field(
        default=20, description="days with fewer items are neither judged nor baseline"
    )
    review_rate_floor: Score = Field(default=0.05, description="narrowest half-band, review rate")
    mean_top_score_floor: Score = Field(
        default=0.03, description="narrowest half-band, mean top score"
    )
    label_share_floor: Score = Field(
        default=0.05, description="narrowest half-band, each label's share"
    )


class Models(Strict):
    """``models:``: the model registry, retraining from corrections and drift watch."""

    registry: NonEmpty | None = Field(
        default=None, description="registry folder (default: models/ beside the database)"
    )
    keep_versions: Annotated[int, Field(ge=1)] = Field(
        default=10, description="registered versions kept (never the active one or its history)"
    )
    min_new_corrections: Annotated[int, Field(ge=1)] = Field(
        default=200, description="new corrections that trigger an on-demand retrain"
    )
    destination: NonEmpty | None = Field(
        default=None,
        description="Slack destination for retrain decisions and drift alerts "
        "(default: review.destination)",
    )
    retrain: RetrainSection = RetrainSection()
    gate: GateSection = GateSection()
    drift: DriftBands = DriftBands()


class RedactionPattern(Strict):
    """An order or account number format: every match becomes ``[name]``."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        description="kind and placeholder name, e.g. order -> [order]"
    )
    pattern: NonEmpty = Field(description="Python regular expression, e.g. '\\bORD-\\d{6}\\b'")
    ignore_case: StrictBool = False


Duration = Annotated[str, Field(pattern=_DURATION.pattern)]


class Privacy(Strict):
    """Redaction patterns, language routing and retention (README, "Privacy")."""

    patterns: list[RedactionPattern] = Field(
        default_factory=list, description="order/account number formats to redact"
    )
    languages: list[NonEmpty] = Field(
        default_factory=lambda: ["en"],
        description="languages the classifier was trained on; others go to review",
    )
    language_destinations: dict[NonEmpty, NonEmpty] = Field(
        default_factory=dict,
        description="language code (or 'unknown') -> destination that gets those items instead",
    )
    retention: dict[NonEmpty, Duration] = Field(
        default_factory=dict,
        description="table -> how long raw text and author details are kept, e.g. items: 365d",
    )
