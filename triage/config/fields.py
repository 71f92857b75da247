"""Building blocks of the configuration models: the strict base, shared field types, durations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
