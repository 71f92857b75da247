"""``triage evaluate --leave-one-source-out``: how the classifier does on sources it never saw.

A customer's stream is always a new source, so an in-domain score (train and test on the same
datasets) overstates what a user gets. Leave-one-source-out trains the whole recipe — model,
calibration, thresholds, review flags, exactly as ``triage train`` does — once per source family
without that family, and scores the family left out. Families are the starter corpus's source-type
families (:data:`classifiers.data.SOURCE_FAMILIES`) and each other data file.

Two modes, matching the two ways a model is trained:

* with the data given as training data (``--data ../shared/datasets/train --with-starter``): every
  family is left out in turn; the model sees the others, starter corpus included;
* ``--starter-only``: what the shipped model can see. The starter families are left out in turn;
  the files given with ``--data`` are never trained on and are scored by the model trained on the
  whole starter corpus (every one of them is a new source for it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.adapt import adapt_streams, adapts_by_content
from classifiers.data import Example, source_family
from classifiers.metrics import evaluate_labels, review_figures
from classifiers.model import Classifier, decide, review_reason_kind
from classifiers.progress import Progress
from classifiers.train import DEFAULT_CONFIG, fit_classifier


def score_group(
    clf: Classifier,
    test: Sequence[Example],
    baseline: list[str] | None = None,
    stream: str = "",
    context: Sequence[Example] | None = None,
    adapt_to: str = "source",
) -> dict[str, Any]:
    """Score one left-out group: macro-F1, accuracy, review rate and unflagged accuracy.

    The group is one stream: its scores adapt to its label mix (:mod:`classifiers.adapt`), as a
    new source's would, when the model's policy does that; with ``adapt_to="neighbours"`` each
    row adapts to the mix of the group's rows most like it instead, as ``triage classify`` adapts
    a file. The ``*_unadapted`` figures are the same without it. The mix is estimated on
    ``context`` (all of the group's rows, of which ``test`` is the part scored, e.g. only some
    gold labels): a stream is everything that arrives, not the rows chosen by their labels. Also
    the macro-F1 the same scores give under the other primary-label rule (``argmax`` for a
    ``priority`` model and the reverse), so the rule can be compared on sources never seen.
    """
    rows = list(context) if context is not None else list(test)
    gold = [ex.label for ex in test]
    plain_all = clf.scores([ex.text for ex in rows])
    adapted_all, _ = adapt_streams(
        plain_all,
        [stream or "left out"] * len(rows),
        clf.policy.adaptation,
        texts=[ex.text for ex in rows],
        by_content=adapts_by_content(adapt_to),
    )
    position = {id(ex): i for i, ex in enumerate(rows)}
    take = [position[id(ex)] for ex in test]
    scores = adapted_all[take]
    decisions = decide(scores, clf.policy)
    pred = [d[0] for d in decisions]
    metrics = evaluate_labels(gold, pred)
    other_rule = "argmax" if clf.policy.primary_rule == "priority" else "priority"
    # Everything else as the model decides, so a field added to the policy is never dropped here.
    alt = replace(clf.policy, primary_rule=other_rule)
    alt_pred = [d[0] for d in decide(scores, alt)]
    result: dict[str, Any] = {
        "n": len(test),
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        **review_figures(gold, pred, [d[2] for d in decisions]),
        "flagged_by_margin_only": (
            round(float(np.mean([review_reason_kind(d[3]) == "margin" for d in decisions])), 4)
            if len(test)
            else 0.0
        ),
        "recall": {lab: m["recall"] for lab, m in metrics["per_label"].items() if m["support"]},
        f"macro_f1_{other_rule}_rule": evaluate_labels(gold, alt_pred)["macro_f1"],
        "confusion": metrics["confusion"]["matrix"],
    }
    if clf.policy.adaptation is not None:
        plain = decide(plain_all[take], clf.policy)
        plain_pred = [d[0] for d in plain]
        result["macro_f1_unadapted"] = evaluate_labels(gold, plain_pred)["macro_f1"]
        for key, value in review_figures(gold, plain_pred, [d[2] for d in plain]).items():
            result[f"{key}_unadapted"] = value
    if baseline is not None:
        base = evaluate_labels(gold, baseline)
        result["baseline_macro_f1"] = base["macro_f1"]
        result["baseline_accuracy"] = base["accuracy"]
    return result


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(values)), 4) if values else None


def summarise(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over groups (each group counts once, whatever its size)."""
    keys = ["macro_f1", "accuracy", "needs_review_rate", "accuracy_when_not_flagged"]
    keys += ["flagged_by_margin_only"]
    keys += [k for k in next(iter(groups.values()), {}) if k.startswith("macro_f1_")]
    keys += ["needs_review_rate_unadapted", "accuracy_when_not_flagged_unadapted"]
    keys += ["baseline_macro_f1", "baseline_accuracy"]
    rows = list(groups.values())
    out: dict[str, Any] = {"groups": len(rows)}
    for key in keys:
        value = _mean(rows, key)
        if value is not None:
            out[key] = value
    # Pooled: every left-out row counts once.
    n = sum(r["n"] for r in rows)
    flagged = sum(r["needs_review_rate"] * r["n"] for r in rows)
    right_unflagged = sum(
        (r["accuracy_when_not_flagged"] or 0.0) * r["n"] * (1 - r["needs_review_rate"])
        for r in rows
    )
    out["pooled_needs_review_rate"] = round(flagged / n, 4) if n else 0.0
    out["pooled_accuracy_when_not_flagged"] = (
        round(right_unflagged / (n - flagged), 4) if n - flagged > 0 else None
    )
    return out


def leave_one_source_out(
    train_data: Sequence[Example],
    unseen: Sequence[Example] = (),
    *,
    test_data: Sequence[Example] = (),
    only_labels: Sequence[str] = (),
    leave_out: Sequence[str] = (),
    config_path: Path = DEFAULT_CONFIG,
    seed: int | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    baseline: bool = True,
    adapt: bool = True,
    adapt_to: str = "source",
    log: Callable[[str], None] = print,
    rich: bool | None = None,
) -> dict[str, Any]:
    """Leave each source family of ``train_data`` out in turn; score ``unseen`` never trained on.

    Each group scored is one stream, adapted to its own label mix when ``adapt`` and the
    config ask for it; the figures without adaptation are kept beside (``*_unadapted``).

    Args:
        train_data: Examples the models may train on; every family of them is left out once.
        unseen: Examples no model trains on, scored per file by the model trained on all of
            ``train_data`` (``--starter-only`` with ``--data``).
        test_data: Rows to score a left-out family on instead of its training rows, matched by
            family (``--test-data ../shared/datasets/dev``: the dev rows of the file left out).
        only_labels: Score only rows with these gold labels (e.g. app-store problem reports and
            feature requests: ``service_issue,feature_request``).
        leave_out: Leave out only these families (default: every one); each costs a training.
        config_path: Architecture config, as for ``triage train``.
        seed: Seed override.
        epochs: Largest epoch count override.
        folds: Inner cross-source folds override (``triage train`` uses them for calibration).
        baseline: Also train TF-IDF + logistic regression on each training part and score it.
        log: Where progress lines go.
        adapt: Adapt each scored group to its label mix (as the trained policy says).
        adapt_to: ``source``: each group to its one mix (as recorded before there was a
            choice); ``neighbours``: each row to the mix of its group's rows most like it, as
            ``triage classify`` adapts a file.
        rich: Draw a progress bar (None: when stderr is a terminal).

    Returns:
        ``{"mode", "adapt_to", "groups": {family: metrics}, "mean": {...}, "mean_by_kind": {...}}``.

    Raises:
        ValueError: When ``adapt_to`` is not one of :data:`classifiers.adapt.ADAPT_TO`, or there
            is too little or unknown data to leave out.
    """
    adapts_by_content(adapt_to)  # refused before the first training, not after it
    by_family: dict[str, list[Example]] = defaultdict(list)
    for ex in train_data:
        by_family[source_family(ex)].append(ex)
    tests: dict[str, list[Example]] = defaultdict(list)
    for ex in test_data:
        tests[source_family(ex)].append(ex)
    unseen_by: dict[str, list[Example]] = defaultdict(list)
    for ex in unseen:
        # Never trained on, so no family to leave out: each file is one new source.
        unseen_by[ex.origin].append(ex)
    if len(by_family) < 2:
        raise ValueError(
            "leave-one-source-out needs training data from at least two source families "
            f"(found {', '.join(by_family) or 'none'})"
        )
    wanted = set(only_labels)

    def keep(rows: Sequence[Example]) -> list[Example]:
        return [ex for ex in rows if not wanted or ex.label in wanted]

    unknown = sorted(set(leave_out) - set(by_family))
    if unknown:
        raise ValueError(
            f"no training data from {', '.join(unknown)} (families: {', '.join(sorted(by_family))})"
        )
    plan = sorted(leave_out or by_family) + (["(all starter families)"] if unseen_by else [])
    groups: dict[str, dict[str, Any]] = {}
    kinds: dict[str, str] = {}
    with Progress("leave-one-source-out", len(plan), log, rich=rich) as progress:
        for step, family in enumerate(plan, 1):
            if family in by_family:
                training = [ex for ex in train_data if source_family(ex) != family]
                scored = {family: tests.get(family) or by_family[family]}
            else:
                training = list(train_data)
                scored = dict(sorted(unseen_by.items()))

            def inner(message: str, step: int = step) -> None:
                progress.note(f"  [{step}/{len(plan)}] {message}")

            nlp, policy, _ = fit_classifier(
                training,
                config_path=config_path,
                seed=seed,
                epochs=epochs,
                folds=folds,
                log=inner,
                rich=False,
                left_out=family if family in by_family else "",
            )
            if not adapt:
                policy.adaptation = None
            clf = Classifier(nlp, {"policy": policy.to_json()}, Path("."))
            for name, every in scored.items():
                rows = keep(every)
                if not rows:
                    continue
                base = None
                if baseline:
                    from classifiers.evaluate import baseline_predictions

                    base = baseline_predictions(training, [ex.text for ex in rows])
                groups[name] = score_group(
                    clf, rows, base, stream=name, context=every, adapt_to=adapt_to
                )
                kinds[name] = "starter" if name.startswith("starter:") else "data"
                g = groups[name]
                progress.note(
                    f"{name}: n={g['n']} macro-F1 {g['macro_f1']:.3f} accuracy {g['accuracy']:.3f} "
                    f"flagged {g['needs_review_rate']:.1%} unflagged accuracy "
                    f"{(g['accuracy_when_not_flagged'] or 0):.3f}"
                )
            progress.advance(f"done: {family}")
    by_kind = {
        kind: summarise({k: v for k, v in groups.items() if kinds[k] == kind})
        for kind in sorted(set(kinds.values()))
    }
    return {
        "mode": "starter-only" if unseen_by else "with-data",
        "config": config_path.name,
        "only_labels": sorted(wanted),
        "adapt_to": adapt_to,
        "groups": groups,
        "mean": summarise(groups) if groups else {},
        "mean_by_kind": by_kind,
    }


def render(result: dict[str, Any]) -> str:
    """The result as a fixed-width table: one row per group, then the means."""
    head = (
        f"{'left out':<34}{'n':>6}{'macro-F1':>10}{'accuracy':>10}{'flagged':>9}"
        f"{'unflagged acc':>15}{'TF-IDF+LR F1':>14}"
    )
    lines = [
        f"leave-one-source-out ({result['mode']}, {result['config']}"
        + (f", labels {','.join(result['only_labels'])}" if result["only_labels"] else "")
        # Older records have no adapt_to: they adapted each group to its one mix.
        + (", each row to its neighbours' mix" if result.get("adapt_to") == "neighbours" else "")
        + ")",
        head,
    ]

    def row(name: str, r: dict[str, Any], n: Any) -> str:
        unflagged = r.get("accuracy_when_not_flagged", r.get("pooled_accuracy_when_not_flagged"))
        base = r.get("baseline_macro_f1")
        return (
            f"{name:<34}{n:>6}{r['macro_f1']:>10.3f}{r['accuracy']:>10.3f}"
            f"{r['needs_review_rate']:>9.1%}"
            f"{(f'{unflagged:.3f}' if unflagged is not None else '-'):>15}"
            f"{(f'{base:.3f}' if base is not None else '-'):>14}"
        )

    for name, r in result["groups"].items():
        lines.append(row(name, r, r["n"]))
    for kind, r in result["mean_by_kind"].items():
        if r.get("groups"):
            lines.append(row(f"mean ({kind} groups)", r, r["groups"]))
    if result["mean"]:
        lines.append(row("mean (all groups)", result["mean"], result["mean"]["groups"]))
        extra = [k for k in result["mean"] if k.startswith("macro_f1_") and k.endswith("_rule")]
        for key in extra:
            lines.append(f"mean macro-F1 under the {key[9:-5]} rule: {result['mean'][key]:.3f}")
        lines.append(
            f"pooled over all left-out rows: {result['mean']['pooled_needs_review_rate']:.1%} "
            "flagged, "
            f"{result['mean'].get('pooled_accuracy_when_not_flagged') or 0:.3f} accurate when not"
            " flagged"
        )
        mean = result["mean"]
        if mean.get("macro_f1_unadapted") is not None:
            lines.append(
                "without adapting to each left-out source's label mix: mean macro-F1 "
                f"{mean['macro_f1_unadapted']:.3f}, flagged {mean['needs_review_rate_unadapted']:.1%}"
                f", unflagged accuracy {mean.get('accuracy_when_not_flagged_unadapted') or 0:.3f}"
            )
    return "\n".join(lines)
