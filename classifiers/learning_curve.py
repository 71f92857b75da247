"""``python -m classifiers.learning_curve``: how much a source's corrections teach the model.

The experiment behind the README's "Learning from corrections" table. A source the shipped model
handles poorly plays a customer's stream: its training rows are fed to the retrain loop as
reviewers' corrections in growing steps (50, 100, 200, 400 by default), each step a real
:func:`classifiers.retrain.retrain` (frozen slice, challenger, gate, promotion) on a throw-away
registry that starts from the shipped model. After each step the active model is scored on the
rest of that source: its dev file, which no model trains on.

The shared datasets may be used for this experiment only: the challengers are deleted at the end
and the shipped model is never trained on them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from classifiers.corrections import Correction
from classifiers.data import Example, load_examples
from classifiers.metrics import evaluate_labels
from classifiers.model import Classifier
from classifiers.registry import Registry
from classifiers.retrain import RetrainSettings, retrain

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def score(clf: Classifier, rows: list[Example]) -> dict[str, Any]:
    """Accuracy, macro-F1, share flagged and accuracy when not flagged of one model on rows."""
    preds = clf.predict([ex.text for ex in rows])
    gold = [ex.label for ex in rows]
    m = evaluate_labels(gold, [p.label for p in preds])
    unflagged = [p.label == g for p, g in zip(preds, gold, strict=True) if not p.needs_review]
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "flagged": round(sum(p.needs_review for p in preds) / max(1, len(preds)), 4),
        "right_when_not_flagged": round(sum(unflagged) / len(unflagged), 4) if unflagged else None,
    }


def run(
    source: str,
    steps: list[int],
    datasets: Path = DATASETS,
    *,
    seed: int = 7,
    settings: RetrainSettings | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Feed a source's training rows to the retrain loop in steps; score after each.

    Args:
        source: A file stem under ``datasets/train`` and ``datasets/dev`` (``airline_tweets``).
        steps: Cumulative numbers of corrections.
        datasets: The shared datasets folder.
        seed: Which training rows are the corrections (a seeded shuffle).
        settings: Retrain settings (default: the project's recipe and gate).

    Returns:
        ``{"source", "dev_rows", "shipped": scores, "steps": [...]}``.
    """
    train_rows = load_examples([datasets / "train" / f"{source}.csv"])
    dev_rows = load_examples([datasets / "dev" / f"{source}.csv"])
    if max(steps) > len(train_rows):
        raise ValueError(f"{source} has {len(train_rows)} training rows, fewer than {max(steps)}")
    random.Random(seed).shuffle(train_rows)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    corrections = [
        Correction(
            text=ex.text,
            label=ex.label,
            source=source,
            provenance_kind="file",
            provenance=f"learning-curve:{source}",
            created_at=start + timedelta(seconds=i),
            line=ex.row,
        )
        for i, ex in enumerate(train_rows[: max(steps)])
    ]
    shipped = score(Classifier.load(), dev_rows)
    log(f"shipped model on {source} dev ({len(dev_rows)} rows): {shipped}")
    out: dict[str, Any] = {
        "source": source,
        "dev_rows": len(dev_rows),
        "seed": seed,
        "shipped": shipped,
        "steps": [],
    }
    with tempfile.TemporaryDirectory(prefix="learning-curve-") as tmp:
        registry = Registry(Path(tmp) / "models")
        for n in steps:
            t0 = time.monotonic()
            decision = retrain(corrections[:n], registry, settings, log=lambda _m: None)
            active = registry.active()
            row: dict[str, Any] = {
                "corrections": n,
                "train": decision.data["train_corrections"],
                "eval_slice": decision.data["eval_slice"],
                "promoted": decision.promoted,
                "reason": decision.reason,
                "active": active.version,
                "active_dev": score(Classifier.load(active.path), dev_rows),
                "seconds": round(time.monotonic() - t0, 1),
            }
            if decision.challenger is not None:
                challenger = registry.get(str(decision.challenger["version"]))
                row["challenger_dev"] = score(Classifier.load(challenger.path), dev_rows)
                row["slice_macro_f1"] = {
                    "champion": decision.champion["metrics"]["corrections"]["macro_f1"],
                    "challenger": decision.challenger["metrics"]["corrections"]["macro_f1"],
                }
            out["steps"].append(row)
            log(
                f"{n} corrections: {'promoted' if decision.promoted else 'not promoted'}; "
                f"active {active.version}: dev accuracy {row['active_dev']['accuracy']:.3f} "
                f"({row['seconds']}s)"
            )
    return out


def render(result: dict[str, Any]) -> str:
    """The result as a Markdown table (the README's)."""
    s = result["shipped"]
    head = (
        "| corrections | trained on / frozen slice | gate | dev accuracy | macro-F1 | flagged "
        "| right when not flagged | challenger's dev accuracy |"
    )
    shipped = (
        f"| 0 (shipped model) | – | – | {s['accuracy']:.3f} | {s['macro_f1']:.3f} | "
        f"{s['flagged']:.0%} | {_pct(s['right_when_not_flagged'])} | – |"
    )
    lines = [
        f"Source `{result['source']}`, scored on its dev file ({result['dev_rows']} rows, never "
        + "trained on).",
        "",
        head,
        "|---|---|---|---|---|---|---|---|",
        shipped,
    ]
    for r in result["steps"]:
        a = r["active_dev"]
        if r["promoted"]:
            gate = "promoted"
        elif "challenger_dev" in r:
            gate = "refused"
        else:
            gate = "too few to judge"
        chall = f"{r['challenger_dev']['accuracy']:.3f}" if "challenger_dev" in r else "–"
        lines.append(
            f"| {r['corrections']} | {r['train']} / {r['eval_slice']} | {gate} | "
            f"{a['accuracy']:.3f} | {a['macro_f1']:.3f} | {a['flagged']:.0%} | "
            f"{_pct(a['right_when_not_flagged'])} | {chall} |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "–"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m classifiers.learning_curve [--source S] [--steps 50,100]``."""
    parser = argparse.ArgumentParser(
        prog="python -m classifiers.learning_curve", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source", default="airline_tweets", help="dataset file stem")
    parser.add_argument("--steps", default="50,100,200,400", help="cumulative corrections")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="shared datasets folder")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--folds", type=int, default=None, help="override the recipe's folds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not (args.datasets / "train").is_dir():
        print(f"no shared datasets at {args.datasets} (see --datasets)", file=sys.stderr)
        return 2
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    settings = RetrainSettings(epochs=args.epochs, folds=args.folds)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run(args.source, steps, args.datasets, seed=args.seed, settings=settings, log=log)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
