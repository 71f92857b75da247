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

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    create_model,
    field_validator,
)

from triage.config.fields import (
    _REQUIRED,
    Label,
    NonEmpty,
    Score,
    SourceSettings,
    Strict,
    ThresholdKey,
    _Frozen,
    parse_duration,
)
from triage.config.sections import Customers, Models, Privacy

__all__ = ["SourceSettings", "Strict", "config_file_model", "json_schema", "parse_duration"]


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
    service_watch: Score | None = Field(
        default=None,
        description="flag when another label wins but service_issue scores at least this",
    )
    adapt_to_source: StrictBool = Field(
        default=True, description="adapt scores to each source's label mix (the model permitting)"
    )
    adapt_history: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=500,
        description="a source's latest classified items its label mix is estimated on, with the "
        "new ones",
    )
    adapt_to: Literal["source", "neighbours"] = Field(
        default="source",
        description="each source to its one mix, or each item to the mix of its source's items "
        "most like it",
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
