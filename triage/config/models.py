"""The configuration file's shape as pydantic models: typed fields, unknown keys refused.

:func:`triage.config.read_config` validates a YAML file against :class:`ConfigFile` once, at load,
so a typo (``sourcs:``) or a wrong type (``min_score: abc``) is one message naming the key, not a
silent default or a failure after a run has started. The same models give the JSON Schema that
editors use (``triage config schema``).

Source settings come from the connector registry: each connector describes its settings in
``SETTINGS`` (``connectors/<name>.py``), and a description containing ``(required)`` makes the key
required. One model per connector is built from that description, so a connector that gains a
setting is validated with no change here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    create_model,
    field_validator,
)

from triage.customers.stages import LifecycleConfig
from triage.models import LABELS

Score = Annotated[float, Field(ge=0.0, le=1.0)]
Label = Literal["kudos", "sales_lead", "feature_request", "service_issue", "other"]
ThresholdKey = Literal[
    "kudos", "sales_lead", "feature_request", "service_issue", "other", "default"
]
# Literal types need the names written out; this keeps them equal to the one list of labels.
assert set(Label.__args__) == set(LABELS)  # type: ignore[attr-defined]
NonEmpty = Annotated[str, Field(min_length=1)]
# The connector registry as the configuration reads it: each source type's ``SETTINGS``.
SourceSettings = Mapping[str, Mapping[str, str]]
# The same, hashable: the models built from it are cached.
_Frozen = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_REQUIRED = re.compile(r"\brequired\)")


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"30m"``, ``"24h"`` or ``"2d"`` into a positive timedelta.

    Raises:
        ValueError: When the text is not such a duration or is not positive.
    """
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a duration such as '24h', '30m' or '2d', got {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


class Strict(BaseModel):
    """A configuration mapping: every key is declared, anything else is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------ sources
def _source_tag(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


def _freeze(sources: SourceSettings) -> _Frozen:
    return tuple(sorted((kind, tuple(desc.items())) for kind, desc in sources.items()))


def source_models(sources: SourceSettings) -> dict[str, type[BaseModel]]:
    """One model per source type, built from the connector's ``SETTINGS`` description."""
    return _source_models(_freeze(sources))


@lru_cache(maxsize=4)
def _source_models(sources: _Frozen) -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for kind, settings in sources:
        fields: dict[str, Any] = {
            "name": (NonEmpty, Field(description="unique name of this source")),
            "type": (Literal[kind], Field(description="connector type")),  # type: ignore[valid-type]
            "enabled": (StrictBool, Field(default=True, description="false pauses the source")),
        }
        for key, desc in settings:
            default = ... if _REQUIRED.search(desc) else None
            fields[key] = (Any, Field(default=default, description=desc))
        models[kind] = create_model(  # type: ignore[call-overload]
            f"Source_{kind}", __base__=Strict, __doc__=f"A `{kind}` source.", **fields
        )
    return models


# ------------------------------------------------------------------------------- destinations
class _Redaction(Strict):
    """What every destination may set about the personal data it receives."""

    keep_in_clear: list[NonEmpty] = Field(
        default_factory=list,
        description="kinds of personal data this destination sees in clear, e.g. [email] for a "
        "helpdesk; everything else is replaced by [email], [phone], ... (card never kept)",
    )


class _Credentials(_Redaction):
    token_env: NonEmpty | None = Field(default=None, description="env var holding the token")
    token_secret: NonEmpty | None = Field(
        default=None, description="Prefect Secret block with the token"
    )


class _Http(Strict):
    retries: Annotated[int, Field(ge=0, le=20)] | None = Field(
        default=None, description="retries of 429, 5xx and timeouts (default 4)"
    )
    backoff: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="first backoff in seconds, doubled per retry (default 0.5)"
    )
    timeout: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="HTTP timeout in seconds (default 15)"
    )
    thread_note: StrictBool | None = Field(
        default=None, description="post 'handed to ...' into the item's Slack review thread"
    )
    base_url: NonEmpty | None = Field(
        default=None, description="API base URL (tests point it at a fake)"
    )


class SlackDestination(_Credentials):
    """A Slack channel (``chat.postMessage``); JSON previews without a token."""

    type: Literal["slack"]
    channel: NonEmpty = Field(description="channel to post to")


class PreviewDestination(_Redaction):
    """Always JSON files under ``outbox_dir``."""

    type: Literal["preview"]
    channel: str | None = Field(default=None, description="shown in the preview files")


class TestimonialsDestination(_Credentials):
    """Kudos kept as testimonials and posted to a Slack channel."""

    type: Literal["testimonials"]
    channel: NonEmpty | None = Field(default=None, description="Slack channel for the testimonials")
    thread_note: StrictBool | None = None


class ZendeskDestination(_Credentials, _Http):
    """Support tickets (Zendesk Tickets API)."""

    type: Literal["zendesk"]
    subdomain: NonEmpty | None = Field(default=None, description="<subdomain>.zendesk.com")
    email: NonEmpty | None = Field(default=None, description="agent email (or ZENDESK_EMAIL)")
    email_env: NonEmpty | None = None
    email_secret: NonEmpty | None = None
    join_window_hours: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="a complaint joins its author's ticket this recent (default 72)"
    )
    join_similarity: Score | None = Field(default=None, description="Jaccard to join (default 0.2)")
    tags: list[str] | None = Field(
        default=None, description="ticket tags (default [feedback-triage])"
    )
    urgent_keywords: list[str] | None = None
    high_keywords: list[str] | None = None


class WebhookDestination(_Http, _Redaction):
    """Signed JSON POSTs to any receiver."""

    type: Literal["webhook"]
    url: NonEmpty = Field(description="where each handoff is POSTed")
    status_url: NonEmpty | None = Field(default=None, description="lookup URL; {key} is replaced")
    secret_env: NonEmpty | None = Field(default=None, description="env var of the signing secret")
    secret_block: NonEmpty | None = Field(
        default=None, description="Secret block of the signing secret"
    )


class HubSpotDestination(_Credentials, _Http):
    """Sales leads as HubSpot contacts and notes."""

    type: Literal["hubspot"]
    portal_id: int | NonEmpty | None = Field(default=None, description="for record links")
    handle_property: NonEmpty | None = Field(default=None, description="default triage_handle")
    key_property: NonEmpty | None = Field(default=None, description="default triage_delivery_key")


class GitHubDestination(_Credentials, _Http):
    """Feature requests grouped into GitHub issues."""

    type: Literal["github"]
    repo: Annotated[str, Field(pattern=r"^[^/\s]+/[^/\s]+$")] = Field(description="owner/name")
    labels: list[str] | None = Field(default=None, description="default [feature-request]")
    similarity: Score | None = Field(
        default=None, description="Jaccard to join a group (default 0.4)"
    )

    @field_validator("keep_in_clear")
    @classmethod
    def _public(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError("a GitHub issue is public: nothing may be kept in clear")
        return value


DESTINATION_MODELS: dict[str, type[Strict]] = {
    "slack": SlackDestination,
    "preview": PreviewDestination,
    "testimonials": TestimonialsDestination,
    "zendesk": ZendeskDestination,
    "webhook": WebhookDestination,
    "hubspot": HubSpotDestination,
    "github": GitHubDestination,
}

Destination = Annotated[
    Annotated[SlackDestination, Tag("slack")]
    | Annotated[PreviewDestination, Tag("preview")]
    | Annotated[TestimonialsDestination, Tag("testimonials")]
    | Annotated[ZendeskDestination, Tag("zendesk")]
    | Annotated[WebhookDestination, Tag("webhook")]
    | Annotated[HubSpotDestination, Tag("hubspot")]
    | Annotated[GitHubDestination, Tag("github")],
    Discriminator(_source_tag),
]


# ------------------------------------------------------------------------------------ the rest
class Rule(Strict):
    """A routing rule: when every condition holds, the item goes to ``department``."""

    department: str | None = Field(description="the department; null keeps the item for nobody")
    name: str | None = None
    label: Label | None = None
    source: NonEmpty | None = Field(default=None, description="only items of this source")
    min_score: Score | None = Field(
        default=None, description="only items whose label scores this much"
    )
    keywords: list[NonEmpty] = Field(default_factory=list, description="any of, case-insensitive")


class Routing(Strict):
    """``routing:`` rules and per-label auto handoff."""

    rules: list[Rule] = Field(default_factory=list)
    auto_handoff: dict[Label, StrictBool | Score] = Field(
        default_factory=dict, description="per label: true, false or a minimum score"
    )


class Department(Strict):
    """How a department receives its handoffs."""

    destination: str | None = None
    also: list[NonEmpty] = Field(default_factory=list, description="further destinations")
    auto_handoff: StrictBool | None = Field(
        default=None, description="confident items skip review (default: support only)"
    )


class Classification(Strict):
    """Review thresholds overriding the model's calibrated ones."""

    thresholds: dict[ThresholdKey, Score] = Field(default_factory=dict)
    margin: Score | None = Field(
        default=None, description="flag when the top two are closer than this"
    )


class Review(Strict):
    """Marketing's review in Slack."""

    destination: str | None = None
    batch_threshold: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="thread the run's review messages above this many (unset: never)"
    )
    resurface_after: str = Field(default="24h", description="remind after this long: 30m, 24h, 2d")
    spool: NonEmpty | None = Field(
        default=None, description="decision spool (default: beside the db)"
    )

    @field_validator("resurface_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            parse_duration(value)  # raises ValueError with the reason
        return value


class Alerts(Strict):
    """Where dead-lettered deliveries are announced."""

    destination: str | None = None


class Delivery(Strict):
    """The outbox."""

    max_attempts: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5, description="failures before a delivery is dead-lettered"
    )


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


def _sources_type(sources: _Frozen) -> Any:
    members = tuple(Annotated[m, Tag(kind)] for kind, m in _source_models(sources).items())
    union = members[0]
    for m in members[1:]:
        union = union | m
    return Annotated[union, Discriminator(_source_tag)]


def config_file_model(sources: SourceSettings) -> type[Strict]:
    """The model of the whole file; its source part comes from the connectors' descriptions."""
    return _config_file_model(_freeze(sources))


@lru_cache(maxsize=4)
def _config_file_model(sources: _Frozen) -> type[Strict]:
    fields: dict[str, Any] = {
        "database": (
            NonEmpty | None,
            Field(
                default=None, description="DuckDB file or postgresql:// URL (TRIAGE_DB overrides)"
            ),
        ),
        "outbox_dir": (NonEmpty | None, Field(default=None, description="JSON previews go here")),
        "model": (
            NonEmpty | None,
            Field(default=None, description="model folder (default: shipped)"),
        ),
        "sources": (list[_sources_type(sources)], Field(default_factory=list)),  # type: ignore[misc]
        "destinations": (dict[NonEmpty, Destination], Field(default_factory=dict)),
        "departments": (dict[NonEmpty, Department | None], Field(default_factory=dict)),
        "routing": (Routing, Routing()),
        "review": (Review, Review()),
        "classification": (Classification, Classification()),
        "delivery": (Delivery, Delivery()),
        "alerts": (Alerts, Alerts()),
        "customers": (Customers, Customers()),
        "models": (Models, Models()),
        "privacy": (Privacy, Privacy()),
    }
    model: type[Strict] = create_model(
        "TriageConfig",
        __base__=Strict,
        __doc__="feedback-triage configuration (README, section Configuration).",
        **fields,
    )
    return model


def json_schema(sources: SourceSettings) -> dict[str, Any]:
    """The JSON Schema of the configuration file, for editors (``triage config schema``)."""
    schema = config_file_model(sources).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "feedback-triage configuration"
    return schema
