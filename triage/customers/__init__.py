"""Customers behind the mentions: profiles, lifecycle stages, bonds and handoff timing.

README, "Customers, lifecycle and reports".

Pure engines over plain records; :mod:`triage.customers.view` runs them over the store for
``triage customers``, ``triage report``, ``triage digest`` and the read-back flow
(``flows/readback.py``). The engines' calls::

    from triage.customers import (
        HandoffOutcome, LifecycleConfig, ManualMerge, Mention,
        assign_stages, resolve_profiles, timing_stats,
    )

    res = resolve_profiles(mentions, merges=[ManualMerge("cus_1a2b3c4d5e6f", "email:ann@x.io")])
    stages = assign_stages(res.profiles, outcomes, config=LifecycleConfig(), now=now)
    stages[profile.id].stage          # "bonded", "at_risk", ...
    timing_stats(outcomes, mentions)  # median / p90 hours per department and source

See :mod:`triage.customers.profiles` (merge rules and stable ids),
:mod:`triage.customers.lifecycle` (deriving stages and bonds), :mod:`triage.customers.stages`
(the stages, the rule table and its configuration) and
:mod:`triage.customers.timing` (the three durations).
"""

from triage.customers.lifecycle import (
    FollowUp,
    Lifecycle,
    StageChange,
    assign_stages,
    classify_signals,
    derive_lifecycle,
)
from triage.customers.models import OUTCOME_STATES, HandoffOutcome, Identity, Mention, Profile
from triage.customers.outcomes import load_outcomes
from triage.customers.profiles import (
    Link,
    ManualMerge,
    Resolution,
    customer_id,
    normalize_email,
    normalize_handle,
    resolve_profiles,
    resolve_reference,
)
from triage.customers.stages import (
    DEFAULT_RULES,
    DEFAULT_SIGNAL_RULES,
    SIGNALS,
    STAGE_DESCRIPTIONS,
    STAGE_TITLES,
    STAGES,
    LifecycleConfig,
    SignalRule,
    StageRule,
)
from triage.customers.timing import MEASURES, TimingStat, percentile, timing_stats

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_SIGNAL_RULES",
    "MEASURES",
    "OUTCOME_STATES",
    "SIGNALS",
    "STAGES",
    "STAGE_DESCRIPTIONS",
    "STAGE_TITLES",
    "FollowUp",
    "HandoffOutcome",
    "Identity",
    "Lifecycle",
    "LifecycleConfig",
    "Link",
    "ManualMerge",
    "Mention",
    "Profile",
    "Resolution",
    "SignalRule",
    "StageChange",
    "StageRule",
    "TimingStat",
    "assign_stages",
    "classify_signals",
    "customer_id",
    "derive_lifecycle",
    "load_outcomes",
    "normalize_email",
    "normalize_handle",
    "percentile",
    "resolve_profiles",
    "resolve_reference",
    "timing_stats",
]
