"""The retrain flow: train a challenger from every correction, gate it, announce the decision.

Deployed twice by ``prefect.yaml`` (README, "Learning from corrections"): weekly, and hourly
with ``only_if_due`` so that a retrain also starts as soon as ``models.min_new_corrections`` new
corrections have arrived since the last decision. Each decision, promoted or not, is posted with
the comparison of champion and challenger to ``models.destination`` (default: the review
channel). A ``triage run`` started after a promotion classifies with the new model.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from classifiers.corrections import Correction
from classifiers.retrain import render
from flows.learning import announcer, load_corrections, models_config, retrain_due, run_retrain
from flows.settings import load_config, settings_at_run_time
from triage.config import Config
from triage.destinations.alerts import notify
from triage.keys import stable_key
from triage.slack.messages import inert

log = logging.getLogger("triage.retrain")

# Slack's section and message text limit is far above this; the comparison table is ~1.5 kB.
_TABLE_LIMIT = 3500


def decision_message(decision: dict[str, Any]) -> dict[str, Any]:
    """The announcement: a headline and the comparison, escaped (file names, reasons) for Slack."""
    challenger = decision.get("challenger") or {}
    champion = decision["champion"]["version"]
    if decision["promoted"]:
        head = f":rocket: Retrain: promoted `{challenger.get('version')}` over `{champion}`"
    elif challenger:
        head = (
            f":shield: Retrain: kept `{champion}`; challenger `{challenger.get('version')}` refused"
        )
    else:
        head = f":hourglass: Retrain: kept `{champion}`; no challenger trained"
    table = inert(render(decision), _TABLE_LIMIT)
    text = f"{inert(head, 300)}\n```{table}```\n`triage models list` shows every version; " + (
        "`triage models rollback` goes back." if decision["promoted"] else "nothing changed."
    )
    return {"text": text}


def _retrain(config: Config, corrections: list[Correction], promote: bool) -> dict[str, Any]:
    decision = run_retrain(config, promote=promote, log=log.info, corrections=corrections)
    return decision.to_json()


def _announce(config: Config, decision: dict[str, Any]) -> str | None:
    dest = announcer(config)
    if dest is None:
        log.info("no models.destination or review.destination: the decision is not announced")
        return None
    key = stable_key(str((decision.get("challenger") or {}).get("version")), decision["at"])
    return notify(
        dest, "retrain", key, decision_message(decision), {"promoted": decision["promoted"]}
    )


# Reading waits up to 30 s for a triage run's write lock; a long backfill may hold it longer.
load_task = task(
    name="read-corrections", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[60, 300, 900]
)(load_corrections)
retrain_task = task(name="train-and-gate", cache_policy=NO_CACHE)(_retrain)
announce_task = task(
    name="announce-decision", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30]
)(_announce)


@flow(name="retrain", log_prints=True)
def retrain(
    config_path: str | None = None,
    database: str | None = None,
    only_if_due: bool = False,
    promote: bool = True,
) -> dict[str, Any]:
    """Retrain from the stored corrections; promote the challenger only if the gate passes.

    Args:
        config_path: The configuration (default as for the triage flow: ``TRIAGE_CONFIG``, the
            Prefect variable ``triage_config``, ``./triage.yaml``, the demo).
        database: The store (default: ``TRIAGE_DB``, the variable ``triage_db``, the config's).
        only_if_due: Retrain only when ``models.min_new_corrections`` corrections arrived since
            the last decision (the on-demand deployment); otherwise return ``skipped``.
        promote: False decides and registers, but never changes the active model.

    Returns:
        The decision (``promoted``, ``reason``, ``champion``, ``challenger``, ...) with
        ``announced`` (where it was posted), or ``{"skipped": True, "reason": ...}``.
    """
    config_path, database = settings_at_run_time(config_path, database)
    config = load_config(config_path, database=database)
    if only_if_due:
        due, new = retrain_due(config)
        if not due:
            need = models_config(config).min_new_corrections
            reason = f"{new} new corrections since the last decision; a retrain needs {need}"
            log.info(reason)
            return {"skipped": True, "reason": reason}
    decision = retrain_task(config, load_task(config), promote)
    decision["announced"] = announce_task(config, decision)
    return decision


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=str))
