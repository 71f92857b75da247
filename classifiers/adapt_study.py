"""How adapting to a source's label mix does on streams a model never trained on.

``python -m classifiers.adapt_study --data ../shared/datasets/train`` scores every file with the
model (default: the shipped one, which never trained on those files, so each is a new source),
then compares settings of :mod:`classifiers.adapt` on two kinds of stream:

* each file as it is (one source, its own label mix);
* each file with a label it (nearly) lacks mixed in at 3% from the file where that label is most
  common, e.g. a few purchase questions among airline complaints: what adapting does to the rare
  item that matters.

Per setting it prints the mean over streams of macro-F1, the share flagged and the accuracy of
the items not flagged, then the recall of the rare rows and how many of them went to the wrong
owner without review. This is how the shipped settings were chosen (README, "Adapting to each
source's label mix"); the numbers depend on the model, so run it again after retraining.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from classifiers.adapt import Adaptation, adapt_streams, stream_name
from classifiers.data import Example, load_examples
from classifiers.metrics import evaluate_labels
from classifiers.model import Classifier, Policy, decide
from classifiers.neighbours import NEIGHBOURS

RARE = 0.02
"""A label under this share of a file is mixed in at :data:`MIXED_IN`."""
MIXED_IN = 0.03


def mixtures(
    files: dict[str, list[Example]], seed: int = 0
) -> list[tuple[str, list[Example], set[int]]]:
    """Each file alone, then each file with each label it nearly lacks mixed in.

    Returns:
        ``(name, rows, indices of the mixed-in rows)`` per stream.
    """
    rng = np.random.default_rng(seed)
    streams: list[tuple[str, list[Example], set[int]]] = [
        (name, rows, set()) for name, rows in files.items()
    ]
    shares = {
        name: {lab: n / len(rows) for lab, n in Counter(ex.label for ex in rows).items()}
        for name, rows in files.items()
    }
    labels = sorted({lab for s in shares.values() for lab in s})
    for name, rows in files.items():
        for label in labels:
            if shares[name].get(label, 0.0) >= RARE:
                continue
            donor = max(files, key=lambda f: shares[f].get(label, 0.0))
            pool = [ex for ex in files[donor] if ex.label == label]
            k = min(len(pool), max(5, int(MIXED_IN * len(rows))))
            if donor == name or not k:
                continue
            picked = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
            streams.append(
                (
                    f"{name} + {label} from {donor}",
                    rows + picked,
                    set(range(len(rows), len(rows) + k)),
                )
            )
    return streams


def decided(
    name: str,
    rows: Sequence[Example],
    scores: np.ndarray,
    setting: Adaptation | None,
    policy: Policy,
    by_content: bool = False,
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Adapt one stream's scores under ``setting`` and decide them.

    Args:
        name: The stream's name.
        rows: Its rows.
        scores: Their calibrated scores.
        setting: The adaptation tried (None: none).
        policy: The model's decision policy.
        by_content: Adapt each row to the rows most like it, as a file without a source column
            is (:func:`classifiers.adapt.content_mixes`), not the stream as one.

    Returns:
        Gold labels, primary labels, flagged for review, right (one entry per row).
    """
    adapted, _ = adapt_streams(
        scores,
        [name] * len(rows),
        setting,
        texts=[ex.text for ex in rows],
        by_content=by_content,
    )
    decisions = decide(adapted, policy)
    gold = [ex.label for ex in rows]
    pred = [d[0] for d in decisions]
    flag = np.array([d[2] for d in decisions], dtype=bool)
    ok = np.array([g == p for g, p in zip(gold, pred, strict=True)], dtype=bool)
    return gold, pred, flag, ok


def rare_rows_lost(
    streams: Sequence[tuple[str, list[Example], set[int], np.ndarray]],
    setting: Adaptation | None,
    policy: Policy,
) -> tuple[int, int]:
    """Mixed-in rare rows handed to the wrong owner without review, and how many there are.

    ``streams`` are :func:`mixtures` with each stream's calibrated scores.
    """
    lost = total = 0
    for name, rows, mixed, scores in streams:
        _, _, flag, ok = decided(name, rows, scores, setting, policy)
        total += len(mixed)
        lost += int(sum(not ok[i] and not flag[i] for i in mixed))
    return lost, total


def study(
    clf: Classifier,
    data: Sequence[str],
    settings: Sequence[tuple[str, Adaptation | None]],
    by_content: Collection[str] = (),
) -> str:
    """Score every stream under each setting; return the report as text.

    ``by_content`` names the settings (by label) applied row by row to each row's neighbourhood
    (:func:`decided`'s ``by_content``).
    """
    examples = load_examples(list(data))
    files: dict[str, list[Example]] = {}
    for ex in examples:
        files.setdefault(stream_name(ex.origin), []).append(ex)
    # Every row is scored once: a mixed-in row is a row of its own file.
    row_of = {id(ex): i for i, ex in enumerate(examples)}
    every = clf.scores([ex.text for ex in examples])
    streams = [
        (name, rows, mixed, every[[row_of[id(ex)] for ex in rows]])
        for name, rows, mixed in mixtures(files)
    ]
    lines = [f"model {clf.version}; {len(streams)} streams ({len(files)} files as they are)"]
    for label, setting in settings:
        f1s, flagged, right_unflagged, rare_right, rare_lost, rare_n = [], [], [], 0, 0, 0
        for name, rows, mixed, scores in streams:
            gold, pred, flag, ok = decided(
                name, rows, scores, setting, clf.policy, label in by_content
            )
            f1s.append(evaluate_labels(gold, pred)["macro_f1"])
            flagged.append(flag.mean())
            right_unflagged.append(ok[~flag].mean() if (~flag).any() else 1.0)
            rare_n += len(mixed)
            rare_right += int(sum(ok[i] for i in mixed))
            rare_lost += int(sum(not ok[i] and not flag[i] for i in mixed))
        lines.append(
            f"{label:<34} macro-F1 {np.mean(f1s):.3f}  flagged {np.mean(flagged):6.1%}  "
            f"right when not flagged {np.mean(right_unflagged):6.1%}  rare rows right "
            f"{rare_right}/{rare_n}, to the wrong owner unreviewed {rare_lost}"
        )
    return "\n".join(lines)


def study_parser(doc: str) -> argparse.ArgumentParser:
    """The options every study takes: ``--data`` (repeatable) and ``--model``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="labelled files/folders")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m classifiers.adapt_study --data PATH [--model DIR]``."""
    parser = study_parser(__doc__)
    parser.add_argument("--damping", default="0.3,0.5,0.7,1", help="comma-separated values")
    parser.add_argument(
        "--by-content",
        action="store_true",
        help="Also the shipped setting applied to each row's neighbourhood (a file without a "
        "source column, classifiers.adapt.content_mixes).",
    )
    args = parser.parse_args(argv)
    clf = Classifier.load(Path(args.model) if args.model else None)
    shipped = clf.policy.adaptation
    if shipped is None:
        parser.error(f"{clf.version} does not adapt (no adaptation in its policy)")
    shipped = replace(shipped, learned=())
    settings: list[tuple[str, Adaptation | None]] = [("not adapted", None)]
    for value in (float(v) for v in args.damping.split(",")):
        settings.append(
            (f"damping {value}, nothing protected", replace(shipped, damping=value, protect=()))
        )
        settings.append(
            (
                f"damping {value}, service issues protected",
                replace(shipped, damping=value, protect=("service_issue",)),
            )
        )
        settings.append(
            (
                f"damping {value}, {' and '.join(shipped.protect)} protected",
                replace(shipped, damping=value),
            )
        )
    content: list[str] = []
    if args.by_content:
        label = f"shipped, each row by the {NEIGHBOURS} most like it"
        settings.append((label, shipped))
        content.append(label)
    print(study(clf, args.data, settings, content))


if __name__ == "__main__":
    main()
