"""Retrain from corrections, judge the challenger against the active model, promote if better.

``triage retrain`` calls :func:`retrain`. One run:

1. Resolves every correction to the latest per text and deals the frozen evaluation slice
   (:func:`classifiers.corrections.split_corrections`). With too few corrections in the slice to
   judge a model, it stops here and says how many more are needed (never trains a model it
   cannot judge).
2. Trains a challenger with ``triage train --with-starter`` semantics (the training recipe of
   :func:`classifiers.train.train`): the starter corpus (less its fixed held-out share), the
   corrections outside the slice (one cross-source family per source) and any configured
   training files. Calibration and review thresholds come from the recipe's out-of-source
   scores over all of those rows; when fewer than ``min_calibration_rows`` were held out, the
   champion's decision policy is kept instead (and the decision says so).
3. Scores champion and challenger on the same slices: the correction slice, the general
   held-out set (``classifiers/corpus/eval/intent_eval.jsonl``, never trained on) and the
   starter held-out share (compared only when the champion was also trained without it: the
   shipped model saw every starter row). The recipe's own cross-source scores are recorded.
4. Applies the gate (:mod:`classifiers.gate`), registers the challenger (promoted or not, so a
   person can still promote it by hand) and promotes it when the gate says so.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifiers.corrections import (
    DEFAULT_EVAL_SHARE,
    EVAL_SALT,
    Correction,
    resolve_latest,
    slice_position,
    split_corrections,
    text_key,
)
from classifiers.data import EVAL_DIR, Example, load_examples, load_starter
from classifiers.fitting import CONFIG_DIR, DEFAULT_CONFIG
from classifiers.gate import CORRECTIONS_SLICE, GatePolicy, judge, score_slice
from classifiers.model import META_FILE, Classifier, Policy
from classifiers.registry import Registry
from classifiers.train import train

GENERAL_EVAL = EVAL_DIR / "intent_eval.jsonl"
GENERAL_SLICE = "general"
STARTER_SLICE = "starter_holdout"
STARTER_SALT = "triage-starter-holdout-v1"
DECISIONS_FILE = "decisions.jsonl"


# The architecture of a challenger whose champion names none that exists (the CLI's default).
ARCH_CONFIG = DEFAULT_CONFIG


@dataclass(frozen=True, slots=True)
class RetrainSettings:
    """How retraining works (``models`` in the configuration; the defaults are the project's)."""

    eval_share: float = DEFAULT_EVAL_SHARE
    """The share of each source's corrections frozen for evaluation."""
    eval_salt: str = EVAL_SALT
    min_eval_rows: int = 20
    """The fewest corrections in the slice worth judging a model on (fewer: refuse)."""
    min_calibration_rows: int = 500
    """The fewest out-of-source rows to fit a decision policy on (fewer: keep the champion's)."""
    starter_holdout_share: float = 0.1
    """The share of the starter corpus no challenger trains on (a general slice)."""
    training_files: tuple[Path, ...] = ()
    """Extra labelled CSV/JSONL files or folders to train on (``--with-starter`` semantics)."""
    general_eval: tuple[Path, ...] = (GENERAL_EVAL,)
    """Labelled files no model trains on, scored as the ``general`` slice."""
    config_path: Path | None = None
    """The architecture config (``classifiers/configs/``); None: the active model's own."""
    seed: int | None = None
    epochs: int | None = None
    """Overrides the recipe's largest epoch count (tests use 1-2 for speed)."""
    folds: int | None = None
    """Overrides the recipe's cross-source folds."""
    gate: GatePolicy = field(default_factory=GatePolicy)
    promote: bool = True
    """False: decide and register, but leave the active model alone (a dry run)."""
    keep_versions: int = 10
    """Registered versions kept (older ones pruned; never the active one or its history)."""

    def to_json(self) -> dict[str, Any]:
        """The settings a decision was made under."""
        return {
            "eval_share": self.eval_share,
            "eval_salt": self.eval_salt,
            "min_eval_rows": self.min_eval_rows,
            "min_calibration_rows": self.min_calibration_rows,
            "starter_holdout_share": self.starter_holdout_share,
            "training_files": [str(p) for p in self.training_files],
            "general_eval": [str(p) for p in self.general_eval],
            "config": self.config_path.name if self.config_path else None,
            "gate": self.gate.to_json(),
        }


@dataclass(slots=True)
class Decision:
    """What a retrain decided; :meth:`to_json` is the object ``triage retrain --json`` prints."""

    promoted: bool
    reason: str
    champion: dict[str, Any]
    """``{"version", "metrics": {slice: scores}}`` of the model that was active."""
    challenger: dict[str, Any] | None
    """``{"version", "metrics", "cross_source", "calibration"}``, or None when none was trained."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0).isoformat())

    def to_json(self) -> dict[str, Any]:
        """One JSON object: ``promoted``, ``reason``, ``champion``, ``challenger`` and details."""
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "champion": self.champion,
            "challenger": self.challenger,
            "checks": self.checks,
            "data": self.data,
            "settings": self.settings,
            "seconds": self.seconds,
            "at": self.at,
        }


def in_starter_holdout(example: Example, share: float) -> bool:
    """Whether a starter row is in the fixed held-out share no challenger trains on."""
    return share > 0 and slice_position(text_key(example.text), STARTER_SALT) < share


def _starter_split(share: float) -> tuple[list[Example], list[Example]]:
    train_rows: list[Example] = []
    held: list[Example] = []
    for ex in load_starter():
        (held if in_starter_holdout(ex, share) else train_rows).append(ex)
    return train_rows, held


def _needed(in_slice: int, settings: RetrainSettings) -> int:
    """About how many more corrections bring the slice to its minimum (at the slice's share)."""
    missing = settings.min_eval_rows - in_slice
    return max(1, math.ceil(missing / settings.eval_share)) if missing > 0 else 0


def _champion_meta(meta_dir: Path) -> dict[str, Any]:
    """A model folder's ``triage_meta.json`` ({} when it is missing or unreadable)."""
    try:
        meta = json.loads((meta_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _champion_holdout(meta_dir: Path) -> dict[str, Any] | None:
    """The starter held-out settings the champion was trained with (None: the shipped model)."""
    held = _champion_meta(meta_dir).get("data", {}).get("starter_holdout")
    return held if isinstance(held, dict) else None


def challenger_config(champion: Path) -> Path:
    """The architecture a challenger trains with when the settings name none: the champion's.

    A challenger of another architecture would be judged on its architecture as much as on the
    corrections; the champion's metadata names its config (``architecture``). Models whose
    config is not in ``classifiers/configs/`` (or has no name) get the default architecture.
    """
    name = _champion_meta(champion).get("architecture")
    if isinstance(name, str) and name and "/" not in name and (CONFIG_DIR / name).is_file():
        return CONFIG_DIR / name
    return ARCH_CONFIG


def retrain(
    corrections: Sequence[Correction],
    registry: Registry,
    settings: RetrainSettings | None = None,
    *,
    log: Callable[[str], None] = print,
) -> Decision:
    """Train a challenger from the starter corpus and corrections, gate it, promote if better.

    Args:
        corrections: Every stored correction (Slack decisions and imports; resolved here).
        registry: Where models are registered and the active pointer lives.
        settings: How to train and judge (default: :class:`RetrainSettings`).
        log: Progress lines (training prints its own progress through it too).

    Returns:
        The decision (also appended to ``<registry>/decisions.jsonl``).
    """
    settings = settings or RetrainSettings()
    started = time.monotonic()
    active = registry.active()
    config_path = settings.config_path or challenger_config(active.path)
    settings = replace(settings, config_path=config_path)
    split = split_corrections(corrections, settings.eval_share, settings.eval_salt)
    counts = split.counts()
    data: dict[str, Any] = {
        "corrections": len(split.train) + len(split.eval),
        "train_corrections": len(split.train),
        "eval_slice": len(split.eval),
        "by_source": counts,
        "by_label": dict(sorted(Counter(c.label for c in split.train + split.eval).items())),
    }
    champion_info: dict[str, Any] = {
        "version": active.version,
        "path": str(active.path),
        "metrics": {},
    }
    if len(split.eval) < settings.min_eval_rows:
        more = _needed(len(split.eval), settings)
        decision = Decision(
            promoted=False,
            reason=(
                f"not enough corrections to judge a new model: {len(split.eval)} of "
                f"{data['corrections']} are in the frozen evaluation slice "
                f"({settings.eval_share:.0%} of each source), {settings.min_eval_rows} are needed; "
                f"about {more} more corrections will do. No model was trained."
            ),
            champion=champion_info,
            challenger=None,
            data=data,
            settings=settings.to_json(),
        )
        _record(registry, decision)
        log(decision.reason)
        return decision
    starter_train, starter_held = _starter_split(settings.starter_holdout_share)
    extra = load_examples(list(settings.training_files)) if settings.training_files else []
    examples = starter_train + [c.to_example() for c in split.train] + extra
    data.update(
        starter=len(starter_train),
        starter_holdout=len(starter_held),
        training_files=dict(sorted(Counter(ex.origin for ex in extra).items())),
    )
    log(
        f"training a challenger on {len(examples)} examples: starter {len(starter_train)}, "
        f"corrections {len(split.train)} (slice of {len(split.eval)} held out), files {len(extra)}"
    )
    general = load_examples(list(settings.general_eval)) if settings.general_eval else []
    slices: dict[str, tuple[list[Example], list[str] | None]] = {
        CORRECTIONS_SLICE: ([c.to_example() for c in split.eval], [c.source for c in split.eval]),
    }
    if general:
        slices[GENERAL_SLICE] = (general, None)
    if starter_held:
        slices[STARTER_SLICE] = (starter_held, None)
    holdout = {"share": settings.starter_holdout_share, "salt": STARTER_SALT}
    compared = [CORRECTIONS_SLICE] + ([GENERAL_SLICE] if general else [])
    if starter_held and _champion_holdout(active.path) == holdout:
        compared.append(STARTER_SLICE)
    with registry.staging() as staging:
        out = staging / "model"
        t0 = time.monotonic()
        meta = train(
            examples,
            out,
            config_path=config_path,
            seed=settings.seed,
            epochs=settings.epochs,
            folds=settings.folds,
            data_description={
                "paths": [str(p) for p in settings.training_files],
                "with_starter": True,
                "corrections": {"train": len(split.train), "by_source": counts},
                "eval_slice": {"share": settings.eval_share, "salt": settings.eval_salt},
                "starter_holdout": holdout,
            },
            log=log,
            rich=False,
        )
        train_seconds = time.monotonic() - t0
        champion = Classifier.load(active.path)
        calibration = _check_calibration(out, meta, champion, settings, log)
        challenger = Classifier.load(out)
        t0 = time.monotonic()
        champ_scores = {n: score_slice(champion, rows, by) for n, (rows, by) in slices.items()}
        chall_scores = {n: score_slice(challenger, rows, by) for n, (rows, by) in slices.items()}
        eval_seconds = time.monotonic() - t0
        promote, reason, checks = judge(champ_scores, chall_scores, compared, settings.gate)
        if STARTER_SLICE in slices and STARTER_SLICE not in compared:
            reason += (
                f" ({STARTER_SLICE} reported, not compared: the champion "
                f"{active.version} was trained on those rows)"
            )
        chall_metrics = {n: s.metrics for n, s in chall_scores.items()}
        version = registry.add(
            out,
            parent=active.version,
            data=data,
            metrics=chall_metrics,
            decision={"gate_passed": promote, "reason": reason},
        )
    champion_info.update(
        model_version=champion.version,
        metrics={n: s.metrics for n, s in champ_scores.items()},
    )
    decision = Decision(
        promoted=False,
        reason=reason,
        champion=champion_info,
        challenger={
            "version": version.version,
            "metrics": chall_metrics,
            # The recipe's own out-of-source scores over its training rows (free: measured
            # while choosing the epochs and calibrating).
            "cross_source": {
                k: meta.get("cross_source", {}).get(k)
                for k in ("n", "macro_f1", "accuracy", "needs_review_rate")
            },
            "calibration": calibration,
        },
        checks=[c.to_json() for c in checks],
        data=data,
        settings={**settings.to_json(), "compared": compared},
        seconds={"train": round(train_seconds, 1), "evaluate": round(eval_seconds, 1)},
    )
    if promote and settings.promote:
        registry.promote(version.version, reason=reason, by="retrain")
        decision.promoted = True
    elif promote:
        decision.reason = "dry run, not promoted; the gate would have: " + reason
    decision.seconds["total"] = round(time.monotonic() - started, 1)
    registry.prune(settings.keep_versions)
    _record(registry, decision)
    log(decision.reason)
    return decision


def _check_calibration(
    out: Path,
    meta: dict[str, Any],
    champion: Classifier,
    settings: RetrainSettings,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Keep the recipe's decision policy only when it was fitted on enough held-out rows.

    A policy fitted on a handful of rows (the failure this loop exists to prevent: five rows,
    F1 1.0, two thirds of items flagged afterwards) is replaced by the champion's.
    """
    rows = int(meta.get("cross_source", {}).get("n", 0))
    if rows >= settings.min_calibration_rows:
        return {"policy": "fitted", "rows": rows}
    log(
        f"only {rows} out-of-source rows to calibrate on (need {settings.min_calibration_rows}): "
        f"keeping the decision policy of {champion.version}"
    )
    kept = Policy.from_json(champion.meta.get("policy", {}))
    fitted = Policy.from_json(meta.get("policy", {})).adaptation
    if kept.adaptation is not None and fitted is not None:
        # The challenger learned the corrections' sources: never adapt to those twice.
        kept.adaptation.learned = tuple(sorted({*kept.adaptation.learned, *fitted.learned}))
    meta["policy"] = kept.to_json()
    meta["policy_from"] = champion.version
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / META_FILE)
    return {"policy": f"kept from {champion.version}", "rows": rows}


def _record(registry: Registry, decision: Decision) -> None:
    """Append the decision to the registry's log (one JSON line, flushed to disk)."""
    registry.root.mkdir(parents=True, exist_ok=True)
    line = json.dumps(decision.to_json(), ensure_ascii=False) + "\n"
    with open(registry.root / DECISIONS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def decisions(registry: Registry) -> list[dict[str, Any]]:
    """Every recorded retrain decision, oldest first (a torn last line after a crash is skipped)."""
    path = registry.root / DECISIONS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def new_corrections_since_last(registry: Registry, corrections: Sequence[Correction]) -> int:
    """How many more (resolved) corrections there are than at the last retrain decision.

    The on-demand retrain trigger: run when this reaches the configured number.
    """
    total = len(resolve_latest(corrections))
    past = decisions(registry)
    return total - int(past[-1]["data"].get("corrections", 0)) if past else total


def render(decision: Decision | dict[str, Any]) -> str:
    """The comparison as plain text (``triage retrain`` and the Slack announcement).

    Plain text only: the caller escapes it for Slack.
    """
    d = decision.to_json() if isinstance(decision, Decision) else decision
    lines = [("PROMOTED " if d["promoted"] else "NOT PROMOTED ") + f"- {d['reason']}"]
    champ = d["champion"]
    chall = d["challenger"]
    if chall is None:
        return "\n".join(lines)
    lines.append(
        f"{'slice':<18}{'n':>6}  {'champion ' + str(champ['version']):>34}  "
        f"{'challenger ' + str(chall['version']):>36}"
    )
    for name, c in champ["metrics"].items():
        n = chall["metrics"][name]
        lines.append(
            f"{name:<18}{c['n']:>6}  {'macro-F1 ' + format(c['macro_f1'], '.3f'):>34}  "
            f"{'macro-F1 ' + format(n['macro_f1'], '.3f'):>36}"
        )
    for check in d["checks"]:
        lines.append(f"[{'ok' if check['passed'] else 'FAIL'}] {check['name']}: {check['detail']}")
    return "\n".join(lines)
