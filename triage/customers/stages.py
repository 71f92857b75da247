"""The lifecycle's vocabulary and configuration: stages, signals, the rule tables, the windows.

**Configuration**: :class:`LifecycleConfig` (pydantic, unknown keys rejected) holds the windows,
thresholds, product names, signal rules and stage rules; a YAML mapping such as ::

    customers:
      lifecycle:
        product_names: [nimbus]
        follow_up_window: 30d
        response_deadline: 3d
        rules:                      # replaces the whole table
          - {signal: churn_talk, to: at_risk}
          - ...

validates with ``LifecycleConfig.model_validate(mapping["customers"]["lifecycle"])``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

Stage = Literal[
    "discovery", "evaluation", "purchase", "use_experience", "bonded", "advocate", "at_risk"
]
# Funnel order (at_risk last: it is a warning, not a step forward).
STAGES: tuple[str, ...] = (
    "discovery",
    "evaluation",
    "purchase",
    "use_experience",
    "bonded",
    "advocate",
    "at_risk",
)
STAGE_TITLES: Mapping[str, str] = {
    "discovery": "Discovery",
    "evaluation": "Evaluation",
    "purchase": "Purchase",
    "use_experience": "Use & experience",
    "bonded": "Bonded",
    "advocate": "Advocate",
    "at_risk": "At risk",
}
STAGE_DESCRIPTIONS: Mapping[str, str] = {
    "discovery": "Has only mentioned us in passing.",
    "evaluation": "Is weighing a purchase: pricing, plans, trials, comparisons.",
    "purchase": "Said they bought, subscribed or upgraded, or a deal was won.",
    "use_experience": "Uses the product: reported an issue, asked for a feature or praised it.",
    "bonded": "Had a problem solved and came back with praise.",
    "advocate": "Recommends the product to others.",
    "at_risk": "Talks of leaving, or has repeated complaints that are still unresolved.",
}
MENTION_SIGNALS: tuple[str, ...] = (
    "discovery",
    "buying_question",
    "purchase",
    "service_issue",
    "feature_request",
    "praise",
    "recommendation",
    "churn_talk",
)
DERIVED_SIGNALS: tuple[str, ...] = ("bond_made", "bond_broken", "repeated_unresolved", "deal_won")
SIGNALS: tuple[str, ...] = MENTION_SIGNALS + DERIVED_SIGNALS
FollowUpOutcome = Literal["praise", "silence", "new_complaint", "pending"]

# The product's own names, substituted for {product} in patterns: "switching to Nimbus" is a
# customer arriving, "switching to Obsidian" one leaving.
PRODUCT = "{product}"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _one_of(value: str, known: tuple[str, ...]) -> str:
    if value not in known:
        raise ValueError(f"unknown signal {value!r}; expected one of {known}")
    return value


class SignalRule(BaseModel):
    """Which signal a mention gives: label conditions and text patterns (all must hold).

    Attributes:
        signal: One of the mention signals (``purchase``, ``churn_talk``...).
        labels: The mention's primary label must be one of these (empty: any label).
        exclude_labels: ...and none of these.
        patterns: At least one must match the text (case-insensitive; empty: no text condition).
            ``{product}`` stands for the configured product names.
        exclude_patterns: None may match the text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: str
    labels: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()

    _known_signal = field_validator("signal")(lambda value: _one_of(value, MENTION_SIGNALS))

    @field_validator("patterns", "exclude_patterns")
    @classmethod
    def _valid_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern.replace(PRODUCT, "x"))
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc
        return value


class StageRule(BaseModel):
    """One row of the stage table: on ``signal``, move from any of ``from_stages`` to ``to``.

    Attributes:
        signal: A mention or derived signal.
        to: The stage to move to.
        from_stages: Stages the rule applies in (empty: any stage).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    signal: str
    to: Stage
    from_stages: tuple[Stage, ...] = Field(
        default=(), validation_alias=AliasChoices("from", "from_stages")
    )

    _known_signal = field_validator("signal")(lambda value: _one_of(value, SIGNALS))

    def applies(self, signal: str, stage: str) -> bool:
        """Whether this rule fires for ``signal`` in ``stage``."""
        return signal == self.signal and (not self.from_stages or stage in self.from_stages)


_EARLY: tuple[Stage, ...] = ("discovery", "evaluation", "purchase")
# Words after "switching to" that name a setting, a device or a plan, not a competitor.
_NOT_A_RIVAL = (
    r"(the|a|an|my|our|dark|light|night|desktop|mobile|web|app|android|ios|iphone|ipad|mac|"
    r"windows|linux|tablet|phone|pro|premium|business|team|annual|yearly|monthly|version|free|"
    r"basic|old|previous|default|normal|stable|beta)\b"
)
DEFAULT_SIGNAL_RULES: tuple[SignalRule, ...] = (
    SignalRule(
        signal="churn_talk",
        exclude_labels=("kudos",),
        patterns=(
            (
                r"\b(cancel+(ed|ing)?|unsubscrib\w*|uninstall\w*|delet\w* my account)\b"
                r".{0,40}\b(my|our|the)\b.{0,20}\b(subscription|plan|account|membership|renewal)"
            ),
            (
                r"\b(i'?m|i am|we'?re|we are|just|finally|gonna|going to|about to|will be)\s+"
                r"(cancel\w*|unsubscrib\w*|uninstall\w*|leaving (you|" + PRODUCT + r")\b)"
            ),
            (
                # Moving to another product; not "switching to dark mode" or "to the web app".
                r"\b(switch\w*|mov(e|ed|ing)|migrat\w*|go(ing)? back|went back)\s+(over\s+)?"
                r"(to|back to)\s+(?!" + PRODUCT + r"|" + _NOT_A_RIVAL + r")\w"
            ),
            (
                r"\b(last straw|looking for (an )?alternatives?|find (an )?alternative|"
                r"not renewing|won'?t be renewing|jumping ship|"
                r"done with (you( guys)?|this app|" + PRODUCT + r"))\b"
            ),
        ),
    ),
    SignalRule(
        signal="purchase",
        exclude_labels=("service_issue", "feature_request"),
        patterns=(
            (
                r"\b(bought|purchased|paid for|subscribed to|signed up for|upgraded( us)? to|renewed|"
                r"went( with)?|got|grabbed|moved (us|our team) to)\s+(the\s+|a\s+|an\s+|our\s+|my\s+)?"
                r"([\w-]+\s+){0,2}(plan|pro|premium|lifetime|licen[cs]e|subscription|seats?|tier|"
                r"annual|yearly)\b"
            ),
            r"\b(just|finally|officially)\s+(bought|purchased|subscribed|paid|upgraded)\b",
            r"\btook my money\b",
        ),
    ),
    SignalRule(
        signal="recommendation",
        labels=("kudos",),
        patterns=(
            r"\brecommend",
            (
                r"\b(you|y'?all|everyone|everybody|anyone|people)\s+(should|need to|must|gotta|have to)"
                r"\s+(try|get|use|check|switch)"
            ),
            r"\b(do yourself a favou?r|go (get|try) it|check (it|them) out|spread the word)\b",
            (
                r"\b(told|telling|convinced|got|moved)\s+(my|our|the|all my)\s+([\w-]+\s+)?(team|friends?|"
                r"co-?workers?|colleagues?|class(mates)?|family|wife|husband|partner|mom|dad|sister|"
                r"brother|boss|students?|clients?)\b"
            ),
        ),
        exclude_patterns=(r"\b(wouldn'?t|would not|don'?t|do not|never|not)\s+recommend",),
    ),
    SignalRule(signal="buying_question", labels=("sales_lead",)),
    SignalRule(signal="service_issue", labels=("service_issue",)),
    SignalRule(signal="feature_request", labels=("feature_request",)),
    SignalRule(signal="praise", labels=("kudos",)),
)

DEFAULT_RULES: tuple[StageRule, ...] = (
    StageRule(signal="churn_talk", to="at_risk"),
    StageRule(signal="repeated_unresolved", to="at_risk"),
    StageRule(signal="recommendation", to="advocate"),
    StageRule(
        signal="bond_made",
        to="bonded",
        from_stages=(*_EARLY, "use_experience", "bonded", "at_risk"),
    ),
    StageRule(signal="bond_broken", to="use_experience", from_stages=("bonded", "advocate")),
    StageRule(signal="purchase", to="purchase", from_stages=("discovery", "evaluation")),
    StageRule(signal="deal_won", to="purchase", from_stages=("discovery", "evaluation")),
    StageRule(signal="buying_question", to="evaluation", from_stages=("discovery",)),
    StageRule(signal="service_issue", to="use_experience", from_stages=_EARLY),
    StageRule(signal="feature_request", to="use_experience", from_stages=_EARLY),
    StageRule(signal="praise", to="use_experience", from_stages=_EARLY),
)


def _duration(value: Any) -> Any:
    # The project's duration style ("24h", "30d"), plain seconds, or a timedelta.
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"expected a duration such as '30d', '48h' or '90m', got {value!r}")
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return value


class LifecycleConfig(BaseModel):
    """Windows, thresholds and rule tables of the lifecycle engine (all optional in YAML).

    Attributes:
        product_names: The product's names, for ``{product}`` in patterns (lower case).
        follow_up_window: How long after a resolution the customer's reaction counts.
        response_deadline: No first response within this long after the mention: ignored.
        resolution_deadline: Not resolved within this long after the mention: ignored.
        complaint_window: Complaints older than this no longer count towards "repeated".
        at_risk_complaints: This many unresolved complaints in the window: at risk.
        bounce_departments: Handed to this many departments: bounced around.
        signals: The signal rules, first match wins (replaces the defaults when given).
        rules: The stage table, first match wins (replaces the defaults when given).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_names: tuple[str, ...] = ()
    follow_up_window: timedelta = timedelta(days=30)
    response_deadline: timedelta = timedelta(days=3)
    resolution_deadline: timedelta = timedelta(days=14)
    complaint_window: timedelta = timedelta(days=60)
    at_risk_complaints: int = Field(default=2, ge=1)
    bounce_departments: int = Field(default=2, ge=2)
    signals: tuple[SignalRule, ...] = DEFAULT_SIGNAL_RULES
    rules: tuple[StageRule, ...] = DEFAULT_RULES

    _parse_durations = field_validator(
        "follow_up_window",
        "response_deadline",
        "resolution_deadline",
        "complaint_window",
        mode="before",
    )(_duration)

    @model_validator(mode="after")
    def _positive_windows(self) -> LifecycleConfig:
        for name in ("follow_up_window", "response_deadline", "resolution_deadline"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self
