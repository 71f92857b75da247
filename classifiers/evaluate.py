"""``triage evaluate``: score a model per file and overall, beside a TF-IDF + logistic-regression baseline."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from classifiers.adapt import StreamMix, adapts_by_content, describe_streams, stream_name
from classifiers.card import REASON_WORDS, flagged_because
from classifiers.data import DataError, Example, load_examples, load_starter
from classifiers.metrics import evaluate_labels, format_report, review_figures
from classifiers.model import REVIEW_REASON_KINDS, Classifier, review_reason_kind
from triage.models import LABELS
from triage.normalize import normalize


def balanced_sample(examples: Sequence[Example], per_label: int, seed: int = 7) -> list[Example]:
    """Draw up to ``per_label`` examples of each label (seeded), for label-balanced scoring."""
    rng = random.Random(seed)
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.label].append(ex)
    out: list[Example] = []
    for label in sorted(groups):
        group = list(groups[label])
        rng.shuffle(group)
        out.extend(group[:per_label])
    return out


def baseline_predictions(train: Sequence[Example], texts: Sequence[str]) -> list[str]:
    """Train TF-IDF (word 1-2 grams) + logistic regression on ``train`` and predict ``texts``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=5.0),
    )
    pipe.fit([normalize(ex.text) for ex in train], [ex.label for ex in train])
    return [str(p) for p in pipe.predict([normalize(t) for t in texts])]


def _training_data(meta: dict[str, Any]) -> list[Example]:
    data = meta.get("data", {})
    paths = [p for p in data.get("paths", []) if Path(p).exists()]
    examples = load_examples(paths) if paths else []
    if data.get("with_starter", not paths):
        examples += load_starter()
    return examples


def plot_confusion(result: dict[str, Any], path: Path, title: str) -> Path:
    """Write the confusion matrix as a PNG heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = result["confusion"]["matrix"]
    labels = result["confusion"]["labels"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(
                j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black"
            )
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


ONE_FILE = "one file"
"""The stream name of rows scored as one file (``evaluate_model(one_file=True)``)."""


def evaluate_model(
    data: Sequence[str],
    model: Path | None,
    *,
    baseline: bool = True,
    balanced: int | None = None,
    only_labels: Sequence[str] = (),
    report_dir: Path | None = Path("reports"),
    adapt: bool = True,
    one_file: bool = False,
    adapt_to: str = "source",
) -> dict[str, Any]:
    """Score a model on labelled data, per file and overall, with an optional baseline.

    Each file is a stream: its scores adapt to its own label mix (:mod:`classifiers.adapt`),
    as a source's do in a run, unless ``adapt`` is False. The mix is estimated on all the file's
    rows, before ``balanced`` and ``only_labels`` choose the rows that are scored, because a run
    sees everything that arrives, and a sample drawn by gold label would let the labels being
    scored choose the mix.

    With ``one_file`` the rows are scored as one file without a source column handed to
    ``triage classify`` (``balanced``'s sample is that file, else every row; ``only_labels`` then
    picks the rows scored): how a user's export of several sources arrives. With
    ``adapt_to="neighbours"`` each row adapts to the rows of its stream (its file, or the one
    file) that read most like it, as ``triage classify`` does; ``"source"`` (the default, so
    recorded figures compare with earlier ones) adapts each stream to its one mix.

    Args:
        data: Labelled CSV/JSONL files or folders.
        model: Model folder; None is the shipped model.
        baseline: Also train TF-IDF + LR on the model's own training data and score it.
        balanced: Score a label-balanced sample of this many per label instead of everything.
        only_labels: Score only the rows whose gold label is one of these.
        report_dir: Where ``confusion_matrix.png`` is written; None skips the plot.
        adapt: Adapt each file's scores to its label mix (the model's policy permitting).
        one_file: Score the rows as one file without a source column.
        adapt_to: ``source`` (each stream to its one mix) or ``neighbours`` (each row to the
            rows of its stream most like it).

    Returns:
        ``{"model", "overall", "per_file", "streams", "errors", "baseline"?, "confusion_png"?}``;
        ``streams`` says what adaptation did for each file; ``overall`` has
        the share flagged for review by reason (``flagged_by_reason``); ``errors``
        lists the misclassified rows (file, row, text, gold and predicted label, review reason,
        scores).

    Raises:
        DataError: When the data has no usable row (a score of zeros would look like a result).
    """
    clf = Classifier.load(model)
    if not adapt:
        clf = clf.with_overrides({}, None, adapt=False)
    by_content = adapts_by_content(adapt_to)
    everything = load_examples(list(data))
    if one_file and balanced:
        # The file a user would hand over is the sample; gold labels then only pick rows to score.
        everything = balanced_sample(everything, balanced)
    examples = everything
    if only_labels:
        examples = [ex for ex in examples if ex.label in only_labels]
    if balanced and not one_file:
        examples = balanced_sample(examples, balanced)
    if not examples:
        raise DataError(
            f"no usable rows in {', '.join(map(str, data))}"
            + (f" with gold label {', '.join(only_labels)}" if only_labels else "")
            + ": every row needs a non-empty 'text' and a 'label' "
            f"({', '.join(LABELS)})"
        )
    texts = [ex.text for ex in examples]
    keys = [ONE_FILE if one_file else stream_name(ex.origin) for ex in everything]
    all_scores, streams = clf.stream_scores(
        [ex.text for ex in everything],
        keys,
        by_content=by_content,
    )
    position = {id(ex): i for i, ex in enumerate(everything)}
    preds = clf.predictions(all_scores[[position[id(ex)] for ex in examples]])
    labels = [p.label for p in preds]
    gold = [ex.label for ex in examples]
    overall = evaluate_labels(gold, labels)
    overall.update(review_figures(gold, labels, [p.needs_review for p in preds]))
    # Why items were flagged, as shares of all rows (each item counts under the first reason that
    # applies): what each review setting costs, e.g. the service watch, on the user's own data.
    kinds = Counter(review_reason_kind(p.review_reason) for p in preds if p.needs_review)
    overall["flagged_by_reason"] = {
        kind: round(kinds[kind] / max(1, len(preds)), 4) for kind in REVIEW_REASON_KINDS
    }
    per_file: dict[str, Any] = {}
    by_origin: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_origin[ex.origin].append(i)
    for origin, idx in sorted(by_origin.items()):
        res = evaluate_labels([gold[i] for i in idx], [labels[i] for i in idx])
        per_file[origin] = {"n": res["n"], "accuracy": res["accuracy"], "macro_f1": res["macro_f1"]}
    result: dict[str, Any] = {
        "model": clf.version,
        "model_path": str(clf.path),
        "data": list(data),
        "labels": list(LABELS),
        "overall": overall,
        "per_file": per_file,
        "streams": {
            str(k): asdict(v) for k, v in sorted(streams.items(), key=lambda kv: str(kv[0]))
        },
        "errors": [
            {
                "file": ex.origin,
                "row": ex.row,
                "text": ex.text,
                "gold": ex.label,
                "predicted": p.label,
                "labels": p.labels,
                "needs_review": p.needs_review,
                "review_reason": p.review_reason,
                "scores": {k: round(v, 4) for k, v in p.scores.items()},
            }
            for ex, p in zip(examples, preds, strict=True)
            if p.label != ex.label
        ],
    }
    if baseline:
        train = _training_data(clf.meta)
        if len({ex.label for ex in train}) >= 2:
            base = evaluate_labels(gold, baseline_predictions(train, texts))
            result["baseline"] = {
                "name": "tfidf-1-2gram + logistic regression",
                "trained_on": len(train),
                **base,
            }
    if report_dir is not None and examples:
        png = plot_confusion(overall, Path(report_dir) / "confusion_matrix.png", f"{clf.version}")
        result["confusion_png"] = str(png)
    return result


def render_text(result: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`evaluate_model`'s result (with its errors, if kept)."""
    parts = [format_report(result["overall"], f"model {result['model']}")]
    unflagged = result["overall"].get("accuracy_when_not_flagged")
    parts.append(
        f"needs review: {result['overall']['needs_review_rate']:.1%}; accuracy when not flagged: "
        + (f"{unflagged:.3f}" if unflagged is not None else "-")
    )
    because = flagged_because(result["overall"].get("flagged_by_reason"))
    if because:
        parts.append(f"flagged because: {because}")
    streams = {k: StreamMix(**v) for k, v in result.get("streams", {}).items()}
    if streams:
        parts.append("adapting to each file's label mix:")
        parts.extend(f"  {line}" for line in describe_streams(streams))
    parts.append("per file:")
    for origin, res in result["per_file"].items():
        parts.append(
            f"  {origin:<36} n={res['n']:>5}  accuracy {res['accuracy']:.3f}  macro-F1 {res['macro_f1']:.3f}"
        )
    if "baseline" in result:
        b = result["baseline"]
        parts.append(
            f"baseline ({b['name']}, trained on {b['trained_on']}): macro-F1 {b['macro_f1']:.4f}"
        )
    if "confusion_png" in result:
        parts.append(f"confusion matrix: {result['confusion_png']}")
    if "errors" in result:
        parts.append(f"misclassified rows ({len(result['errors'])}):")
        for e in result["errors"]:
            text = " ".join(e["text"].split())
            text = text if len(text) <= 100 else text[:99] + "…"
            kind = review_reason_kind(e.get("review_reason"))
            flag = f" (flagged: {REASON_WORDS[kind]})" if kind else ""
            parts.append(
                f"  {e['file']}:{e['row']}  gold {e['gold']}  predicted {e['predicted']}{flag}  {text}"
            )
    return "\n".join(parts)


def record(result: dict[str, Any], name: str, model_dir: Path | None = None) -> Path:
    """Store an evaluation summary in the model's metadata and regenerate its model card.

    Args:
        result: What :func:`evaluate_model` or a leave-one-source-out run returned.
        name: The heading it gets in the card.
        model_dir: The model folder (default: the evaluated model's; for leave-one-source-out,
            which trains its own models, the shipped model).
    """
    from classifiers.card import model_card
    from classifiers.model import DEFAULT_MODEL_DIR, META_FILE

    model_dir = model_dir or Path(result.get("model_path") or DEFAULT_MODEL_DIR)
    meta_path = model_dir / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if "groups" in result:
        keep = (
            "n",
            "macro_f1",
            "accuracy",
            "needs_review_rate",
            "accuracy_when_not_flagged",
            "recall",
            "baseline_macro_f1",
            "flagged_by_margin_only",
        )
        meta.setdefault("cross_source_evaluations", {})[name] = {
            "mode": result["mode"],
            "config": result["config"],
            "only_labels": result["only_labels"],
            "adapt_to": result.get("adapt_to", "source"),
            "groups": {
                g: {k: v for k, v in r.items() if k in keep or k.endswith(("_rule", "_unadapted"))}
                for g, r in result["groups"].items()
            },
            "mean": result["mean"],
            "mean_by_kind": result["mean_by_kind"],
        }
    else:
        meta.setdefault("evaluations", {})[name] = {
            "data": result["data"],
            "n": result["overall"]["n"],
            "macro_f1": result["overall"]["macro_f1"],
            "accuracy": result["overall"]["accuracy"],
            "needs_review_rate": result["overall"]["needs_review_rate"],
            "accuracy_when_not_flagged": result["overall"].get("accuracy_when_not_flagged"),
            # Kept so a later model's card can say whether a change in the flagged share came
            # from missing labels, low confidence, the service watch or close calls.
            "flagged_by_reason": result["overall"].get("flagged_by_reason"),
            "per_file": result["per_file"],
            # Which files' scores were adapted to their label mix (and to what), so that a
            # figure recorded with adaptation is never compared with one without unawares.
            "streams": result.get("streams", {}),
            "baseline_macro_f1": (result.get("baseline") or {}).get("macro_f1"),
        }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (model_dir / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    return model_dir / "MODEL_CARD.md"
