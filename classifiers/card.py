"""The model card (``MODEL_CARD.md``) rendered from a model's metadata."""

from __future__ import annotations

import json
from typing import Any

from classifiers.adapt import ADAPTED
from classifiers.neighbours import NEIGHBOURS

# Words for each kind of review reason (``classifiers.model.REVIEW_REASON_KINDS``), shared by
# ``triage evaluate``'s report and the model card.
REASON_WORDS = {
    "no_label": "no label clears its threshold",
    "below_review_threshold": "primary below its review threshold",
    "service_watch": "service watch",
    "margin": "top two too close",
}


def flagged_because(by_reason: dict[str, float] | None) -> str:
    """Say which share of the items each kind of review reason flagged.

    Args:
        by_reason: Share of all items per reason kind (an evaluation's ``flagged_by_reason``);
            ``None`` for evaluations recorded before the breakdown existed.

    Returns:
        For example ``"no label clears its threshold 14.9%, service watch 1.6%"``; empty when
        nothing was flagged or there is no breakdown.
    """
    return ", ".join(
        f"{REASON_WORDS[kind]} {share:.1%}" for kind, share in (by_reason or {}).items() if share
    )


def review_card_line(review: dict[str, Any], found: dict[str, Any]) -> str:
    """The model card's sentence on how the review thresholds were chosen."""
    watch = review.get("service_watch")
    watched = (
        f" An item whose primary label is not service_issue while service_issue scores {watch} "
        "or more is flagged too (support must act first), and the cutoffs are fitted without "
        "those items."
        if watch is not None
        else ""
    )
    if review.get("rule") == "overall accuracy":
        target = f"stay at least {review['accuracy']:.0%} right overall"
        bound = f"one-sided lower confidence bound, z {review['confidence_z']}"
        starter = review.get("starter_accuracy")
        if starter is not None and found.get("target") == starter:
            target = f"stay at least {starter:.1%} right overall"
            bound = (
                "the starter corpus's own target: our own writing, harder out of family than a "
                f"real source; a model trained on other files too holds every row to "
                f"{review['accuracy']:.0%}; " + bound
            )
        elif starter is not None:
            bound = (
                f"the starter corpus's own target, {starter:.1%}, applies to a model trained on it "
                "alone; " + bound
            )
        return (
            "- Review thresholds: one cutoff on each label's local precision (isotonic fit of "
            "right/wrong on its out-of-source scores), the lowest at which the items not flagged "
            f"{target} ({bound}): local precision {found.get('local_precision')}, "
            f"{found.get('kept', 0):.1%} of the out-of-source rows kept at "
            f"{found.get('accuracy_kept', 0):.1%} right. Margin chosen from {review['margins']}. "
            "Below its review threshold, with no label over its threshold or with the top two "
            "scores closer than the margin, an item is flagged for review." + watched
        )
    return (
        "- Review threshold: the lowest score from which a label's items were at least "
        f"{review.get('precision', 0.95):.0%} right out of source; below it, or with no "
        "label over its threshold, an item is flagged for review." + watched
    )


def adaptation_card_line(adaptation: dict[str, Any] | None) -> str:
    """The model card's sentence on adapting to each source's label mix (classifiers.adapt)."""
    if not adaptation:
        return "- Scores are not adapted to a source's label mix."
    prior = ", ".join(f"{lab} {v:.3f}" for lab, v in adaptation["prior"].items())
    protect = ", ".join(adaptation.get("protect", [])) or "none"
    return (
        "- Adapted to each source's label mix: estimated from the source's own scores (at least "
        f"{adaptation['min_items']} items, its recent history included; in `triage classify`, "
        f"each item to the mix of the {NEIGHBOURS} items of its source most like it), applied "
        f"{adaptation['damping']} of the way in log-odds from the training mix ({prior}); never "
        f"lowered: {protect}; not adapted: the {len(adaptation.get('learned', []))} sources the "
        "model trained on."
    )


def model_card(meta: dict[str, Any], evaluations: dict[str, Any] | None = None) -> str:
    """Render the model card: data, out-of-source metrics, thresholds, vectors, known limits."""
    policy = meta["policy"]
    cross = meta["cross_source"]
    data = meta["data"]
    lines = [
        f"# Model card: {meta['version']}",
        "",
        (
            f"Created {meta['created_at']} from `{meta['architecture']}` (spaCy "
            f"`textcat_multilabel`), seed {meta['seed']}, {meta['best_epoch']} epochs (chosen out "
            f"of {meta['epochs']} by cross-source macro-F1)."
        ),
        "",
        "## Data",
        (
            f"- Sources: {json.dumps(data.get('paths', []))}; starter corpus included: "
            f"{data.get('with_starter', False)}"
        ),
        f"- {data['train_examples']} training examples; per label: "
        + ", ".join(f"{k} {v}" for k, v in data["by_label"].items()),
        "- Source families: "
        + ", ".join(f"{k} {v}" for k, v in data.get("by_source_family", {}).items()),
        *(
            [
                "- Teacher-labelled rows (`classifiers/teacher.py`; trained on, never scored), by "
                "the family their teacher left out: "
                + ", ".join(f"{k} {v}" for k, v in data["teacher_rows"].items())
            ]
            if data.get("teacher_rows")
            else []
        ),
        "",
        "## Out-of-source metrics (cross-source folds)",
        (
            "Every number here is measured on scores that a model gave to source families it "
            "did not train on (folds: "
            + (
                ", ".join(f"{k} -> {v + 1}" for k, v in meta["cross_source_folds"].items())
                if isinstance(meta["cross_source_folds"], dict)
                else str(meta["cross_source_folds"])
            )
            + "); the shipped weights are then trained on everything."
        ),
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for lab, m in cross["per_label"].items():
        lines.append(
            f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        )
    lines += [
        "",
        (
            f"Macro-F1 {cross['macro_f1']:.4f}, accuracy {cross['accuracy']:.4f}; "
            f"{cross['needs_review_rate']:.1%} flagged for review, "
            f"{cross['accuracy_when_not_flagged']:.1%} accurate when not flagged. "
            "Macro-F1 by primary rule (cross-validated thresholds): "
            + ", ".join(f"{r} {v:.4f}" for r, v in cross["rule_macro_f1"].items())
            + "."
        ),
        "",
        "## Decision policy (fitted on the out-of-source scores)",
        (
            f"- Primary rule: `{policy['primary_rule']}` (the label contract: service_issue > sales_lead > "
            "feature_request > kudos among the labels whose calibrated score clears its threshold)"
            f"; margin between the top two scores: {policy['margin']}."
        ),
        review_card_line(meta.get("review", {}), cross.get("review_fit", {})),
        adaptation_card_line(policy.get("adaptation")),
        "",
        "| label | decision threshold | review threshold | calibration (a, b) |",
        "|---|---|---|---|",
    ]
    for lab in meta["labels"]:
        cal = policy["calibration"].get(lab, ["-", "-"])
        lines.append(
            f"| {lab} | {policy['thresholds'].get(lab, 0.5)} | "
            f"{policy['review_thresholds'].get(lab, 0.5)} | {cal[0]}, {cal[1]} |"
        )
    vectors = meta.get("vectors")
    if vectors:
        lines += [
            "",
            "## Static vectors",
            (
                f"- `{vectors['name']}`: {vectors['rows']} x {vectors['dims']} "
                f"({vectors['kind']}), from {vectors['source']}; {vectors['method']}. "
                f"Licence: {vectors['licence']} (see `classifiers/vectors/{vectors['name']}/"
                "LICENSE.txt`). Stored in this folder (`vocab/vectors`); nothing is downloaded."
            ),
        ]
    for name, res in meta.get("cross_source_evaluations", {}).items():
        # Records from before --adapt-to have none: each group adapted to its one mix.
        by_rows = res.get("adapt_to") == "neighbours"
        lines += [
            "",
            f"## Leave-one-source-out: {name}",
            "",
            (
                f"`triage evaluate --leave-one-source-out` ({res['mode']}, `{res['config']}`"
                + (f", gold labels {', '.join(res['only_labels'])}" if res["only_labels"] else "")
                + "): each group scored by a model trained without it"
                + (
                    ", each row adapted to the mix of the group's rows most like it."
                    if by_rows
                    else "."
                )
            ),
            "",
            (
                "| left out | n | macro-F1 | accuracy | flagged | accuracy when not flagged "
                "| TF-IDF + LR macro-F1 |"
            ),
            "|---|---|---|---|---|---|---|",
        ]

        def cell(value: Any, pct: bool = False) -> str:
            if value is None:
                return "-"
            return f"{value:.1%}" if pct else f"{value:.3f}"

        rows = [(g, r, str(r["n"])) for g, r in res["groups"].items()]
        rows += [
            (f"**mean, {kind} groups**", r, f"{r['groups']} groups")
            for kind, r in res["mean_by_kind"].items()
        ]
        for group, r, n in rows:
            unflagged = r.get(
                "accuracy_when_not_flagged", r.get("pooled_accuracy_when_not_flagged")
            )
            lines.append(
                f"| {group} | {n} | {cell(r['macro_f1'])} | {cell(r['accuracy'])} | "
                f"{cell(r['needs_review_rate'], True)} | {cell(unflagged)} | "
                f"{cell(r.get('baseline_macro_f1'))} |"
            )
        mean = res.get("mean", {})
        if mean.get("macro_f1_unadapted") is not None:
            lines += [
                "",
                (
                    (
                        "Each row's scores adapted to the mix of its group's rows most like it"
                        if by_rows
                        else "Each group's scores adapted to its own label mix"
                    )
                    + "; without that, the mean "
                    f"macro-F1 is {cell(mean['macro_f1_unadapted'])}, "
                    f"{cell(mean.get('needs_review_rate_unadapted'), True)} flagged, "
                    f"{cell(mean.get('accuracy_when_not_flagged_unadapted'))} accurate when not "
                    "flagged."
                ),
            ]
    evaluations = evaluations or meta.get("evaluations")
    if evaluations:
        lines += ["", "## Evaluations (`triage evaluate --record`)", ""]
        for name, res in evaluations.items():
            line = f"- {name}: macro-F1 {res['macro_f1']:.4f}, accuracy {res['accuracy']:.4f} (n={res['n']})"
            if res.get("needs_review_rate") is not None:
                line += f"; {res['needs_review_rate']:.1%} flagged"
            if res.get("accuracy_when_not_flagged") is not None:
                line += f", {res['accuracy_when_not_flagged']:.1%} accurate when not flagged"
            because = flagged_because(res.get("flagged_by_reason"))
            if because:
                line += f" (flagged because: {because})"
            if res.get("baseline_macro_f1") is not None:
                line += f"; TF-IDF + LR baseline {res['baseline_macro_f1']:.4f}"
            adapted = [
                k if v.get("reason", ADAPTED) == ADAPTED else f"{k} (each row to the rows like it)"
                for k, v in (res.get("streams") or {}).items()
                if v.get("mix")
            ]
            if adapted:
                line += f"; scores adapted to the label mix of {', '.join(adapted)}"
            lines.append(line)
    lines += [
        "",
        "## Known limits",
        "- English only; other languages fall back to low-confidence guesses and are flagged.",
        "- Word n-grams, stems and static word-piece vectors (averaged, and read by phrase",
        "  filters three pieces wide): no context beyond a few neighbouring words, so heavy",
        "  sarcasm without cue words and very long mixed messages are its weakest cases.",
        "- Review thresholds are set out of source, on our own families of sources (and on the",
        "  other files a model trained on). How right the items handed off are on a source the",
        "  model never saw depends on how far that source is from those (see the tables above);",
        "  a very different stream can be less right or need more review: check its review rate",
        "  and retrain with reviewers' corrections.",
        *adaptation_limits(policy.get("adaptation")),
        "- Secondary labels come from the same scores; they are suggestions for reviewers.",
        "",
    ]
    return "\n".join(lines)


def adaptation_limits(adaptation: dict[str, Any] | None) -> list[str]:
    """The model card's known limit of adapting to a source's label mix (none if it does not)."""
    if not adaptation:
        return []
    lines = [
        "- Adapting to a source's label mix assumes that a label's texts read alike there and in",
        f"  training, and needs {adaptation['min_items']} items of the source; a rare label in a "
        + "stream of another one",
    ]
    protect = " and ".join(lab.replace("_", " ") + "s" for lab in adaptation.get("protect", []))
    if not protect:
        lines.append("  (a lead among complaints) is then flagged more often.")
    else:
        lines += [
            "  (a lead among complaints) is then flagged more often, though its score is never",
            f"  lowered for {protect}.",
        ]
    return [
        *lines,
        "- `triage classify` adapts each row to the mix of the "
        + f"{NEIGHBOURS} rows of its source (of the",
        "  file, without a `source` column) that read most like it: sources that write alike",
        "  about the same things are not told apart in a file without sources.",
    ]
