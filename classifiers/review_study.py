"""What the starter corpus's review target does on real sources a model never trained on.

The review thresholds are fitted on the starter corpus scored out of family (each source type
scored by a model trained on the others; :func:`classifiers.fitting.cross_source_scores`). The
starter corpus is our own writing and leans on the hard cases (near misses, mixed intent), so
those scores are harder than a real source's: the unflagged items that are 95% right there are
about 98% right on the shared files, and more is flagged than the promise needs.

``python -m classifiers.review_study --data ../shared/datasets/train`` refits the review thresholds
of a starter-only model for several targets on its starter rows (``review_accuracy_starter``),
then scores every file given (and the eval-only sets) as a new source, adapted as a run would.
Per target it prints the share flagged and the accuracy of the items not flagged on the folds, on
every file pooled, on a label-balanced sample (150 per label) and on each file. This is how the
shipped target was chosen (README, "Review policy"); the numbers depend on the model, so run it
again after retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from classifiers.adapt import adapt_streams, stream_name
from classifiers.adapt_study import mixtures, rare_rows_lost, study_parser
from classifiers.calibration import fit_policy
from classifiers.data import EVAL_DIR, Example, load_examples, load_starter
from classifiers.fitting import CONFIG_DIR, DocCache, build_pipeline, cross_source_scores
from classifiers.model import Classifier, decide_columns
from triage.models import LABELS

PER_LABEL = 150
"""Rows per label in the label-balanced sample (as ``triage evaluate --balanced 150``)."""


def _rates(right: np.ndarray, flagged: np.ndarray) -> str:
    kept = right[~flagged]
    return f"{flagged.mean():6.1%} flagged, {kept.mean() if len(kept) else 1.0:6.1%} right"


def study(
    clf: Classifier,
    data: Sequence[str | Path],
    targets: Sequence[float],
    seed: int = 13,
    starter: Sequence[Example] | None = None,
    dampings: Sequence[float] = (),
) -> str:
    """Refit the review thresholds for each target and score the files; return the report.

    Args:
        clf: A model trained on the starter corpus only (the files must be new to it).
        data: Labelled files or folders, each file scored as a source of its own.
        targets: The starter targets (``review_accuracy_starter``) to compare.
        seed: Seed of the label-balanced sample.
        starter: The starter rows to fit on (default: the whole corpus, as the model was).
        dampings: Also score each target with these adaptation dampings (0: not adapted) and
            count the rare rows mixed into the files (:func:`classifiers.adapt_study.mixtures`)
            that go to the wrong owner unreviewed: the damping is chosen by that count, and
            the review thresholds move it, so the two are chosen together.
    """
    meta = clf.meta
    examples = list(starter) if starter is not None else load_starter()
    settings = dict(build_pipeline(CONFIG_DIR / str(meta["architecture"]))[1])
    raw, fold, _ = cross_source_scores(
        CONFIG_DIR / str(meta["architecture"]),
        examples,
        int(settings.get("folds", 4)),
        int(meta["epochs"]),
        int(meta["seed"]),
        None,
        DocCache(),
    )
    out_of_family = raw[int(meta["best_epoch"]) - 1]
    files: dict[str, list[Example]] = {}
    for ex in load_examples([*data, EVAL_DIR]):
        files.setdefault(stream_name(ex.origin), []).append(ex)
    # Each file is scored once; the model's own adaptation and every damping start from these.
    plain = {name: clf.scores([ex.text for ex in rows]) for name, rows in files.items()}
    scored = {}
    for name, rows in files.items():
        scores, _ = adapt_streams(plain[name], [name] * len(rows), clf.policy.adaptation)
        scored[name] = (scores, np.array([LABELS.index(ex.label) for ex in rows]))
    shared = [name for name in files if not (EVAL_DIR / f"{name}.jsonl").is_file()]
    mixed: list[tuple[str, list[Example], set[int], np.ndarray]] = []
    if dampings:
        row_of = {id(ex): (name, i) for name in shared for i, ex in enumerate(files[name])}
        for name, rows, extra in mixtures({n: files[n] for n in shared}):
            at = [row_of[id(ex)] for ex in rows]
            mixed.append((name, rows, extra, np.stack([plain[n][i] for n, i in at])))
    rng = np.random.default_rng(seed)
    sample: list[tuple[str, int]] = []
    for j in range(len(LABELS)):
        pool = [(name, i) for name in shared for i in np.flatnonzero(scored[name][1] == j)]
        sample += [pool[i] for i in rng.permutation(len(pool))[:PER_LABEL]]
    header = (
        f"model {clf.version}; review thresholds refitted on {len(examples)} starter rows scored "
        f"out of family; {len(shared)} files as new sources ({sum(len(files[n]) for n in shared)} "
        "rows), adapted to each file's mix"
    )
    lines = [header]
    for target in targets:
        policy, measured = fit_policy(
            out_of_family, examples, fold, settings | {"review_accuracy_starter": target}, seed
        )
        policy.adaptation = clf.policy.adaptation
        results = {}
        for name, (scores, gold) in scored.items():
            decisions = decide_columns(scores, policy)
            results[name] = (decisions.primary == gold, decisions.needs_review)
        pooled = [np.concatenate([results[n][k] for n in shared]) for k in (0, 1)]
        balanced = [np.array([results[n][k][i] for n, i in sample]) for k in (0, 1)]
        lines.append(
            f"starter target {target}: folds {measured['needs_review_rate']:.1%} flagged, "
            f"{measured['accuracy_when_not_flagged']:.1%} right; thresholds "
            + ", ".join(f"{lab} {v:.3f}" for lab, v in policy.review_thresholds.items())
            + f"; margin {policy.margin}"
        )
        lines.append(f"  {'files pooled':<28} {_rates(*pooled)}")
        lines.append(f"  {f'label-balanced {PER_LABEL} per label':<28} {_rates(*balanced)}")
        for name, (right, flagged) in results.items():
            lines.append(f"  {name:<28} {_rates(right, flagged)}")
        for damping in dampings:
            setting = (
                replace(clf.policy.adaptation, damping=damping, learned=())
                if damping and clf.policy.adaptation is not None
                else None
            )
            by_file = {}
            for name in shared:
                gold = scored[name][1]
                adapted, _ = adapt_streams(plain[name], [name] * len(gold), setting)
                decisions = decide_columns(adapted, policy)
                by_file[name] = (decisions.primary == gold, decisions.needs_review)
            balanced = [np.array([by_file[n][k][i] for n, i in sample]) for k in (0, 1)]
            lost, total = rare_rows_lost(mixed, setting, policy)
            each = ", ".join(
                f"{name} {r[~f].mean() if (~f).any() else 1.0:.1%}"
                for name, (r, f) in by_file.items()
            )
            lines.append(
                f"  damping {damping}: label-balanced {_rates(*balanced)}; rare rows to the "
                f"wrong owner unreviewed {lost} of {total}; right when not flagged: {each}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m classifiers.review_study --data PATH [--model DIR]``."""
    parser = study_parser(__doc__)
    parser.add_argument("--targets", default="0.95,0.94,0.93,0.92,0.9", help="comma-separated")
    parser.add_argument(
        "--dampings", default="", help="also these adaptation dampings, comma-separated (0: none)"
    )
    args = parser.parse_args(argv)
    clf = Classifier.load(Path(args.model) if args.model else None)
    if clf.meta.get("data", {}).get("paths"):
        parser.error(
            f"{clf.version} trained on more than the starter corpus; the study refits a "
            "starter-only model's thresholds"
        )
    dampings = [float(d) for d in args.dampings.split(",") if d.strip()]
    print(study(clf, args.data, [float(t) for t in args.targets.split(",")], dampings=dampings))


if __name__ == "__main__":
    main()
