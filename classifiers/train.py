"""Train, calibrate and package a triage text classifier (spaCy ``textcat_multilabel``)."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from spacy.training import Example as SpacyExample
from spacy.util import fix_random_seed, minibatch
from thinc.api import Adam, Config, Optimizer

from classifiers.data import Example, split
from classifiers.metrics import evaluate_labels
from classifiers.model import (
    COMPONENT,
    META_FILE,
    Classifier,
    Policy,
    calibrate,
    decide,
    primary_indices,
)
from classifiers.normalize import normalize
from classifiers.tokenizer import FastTokenizer
from triage.models import LABELS

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "textcat_bow.cfg"
# Review thresholds are set where a label's held-out precision reaches this level.
REVIEW_PRECISION = 0.9


def _log(msg: str) -> None:
    print(msg, flush=True)


def build_pipeline(config_path: Path) -> tuple[spacy.language.Language, dict[str, Any]]:
    """Create an untrained pipeline from a checked-in config; return it with the training settings."""
    config = Config().from_disk(config_path)
    training = dict(config.pop("training", {}))
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    return nlp, training


def _normalising(nlp: spacy.language.Language) -> bool:
    return isinstance(nlp.tokenizer, FastTokenizer)


def _spacy_examples(nlp: spacy.language.Language, data: Sequence[Example]) -> list[SpacyExample]:
    out = []
    for ex in data:
        # The pipeline's tokenizer normalises; configs with spaCy's own tokenizer get it here.
        doc = nlp.make_doc(ex.text if _normalising(nlp) else normalize(ex.text))
        cats = {lab: float(lab in ex.labels) for lab in LABELS}
        out.append(SpacyExample.from_dict(doc, {"cats": cats}))
    return out


def fit_platt(
    raw: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50
) -> tuple[float, float]:
    """Fit ``sigmoid(a * logit(raw) + b)`` to 0/1 targets by Newton's method (Platt scaling)."""
    p = np.clip(raw, 1e-6, 1 - 1e-6)
    x = np.log(p / (1 - p))
    a, b = 1.0, 0.0
    for _ in range(iters):
        z = a * x + b
        q = 1.0 / (1.0 + np.exp(-z))
        w = q * (1 - q)
        g = np.array([np.sum((q - y) * x) + l2 * (a - 1), np.sum(q - y) + l2 * b])
        h = np.array([[np.sum(w * x * x) + l2, np.sum(w * x)], [np.sum(w * x), np.sum(w) + l2]])
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-7:
            break
    return a, b


def _macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the labels present in ``gold`` (as :func:`evaluate_labels`), on indices."""
    k = len(LABELS)
    matrix = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def _fit_thresholds(scores: np.ndarray, gold: np.ndarray, rule: str) -> np.ndarray:
    """Per-label decision thresholds that maximise macro-F1 on these rows (coordinate ascent)."""
    thresholds = np.full(len(LABELS), 0.5)
    if rule == "argmax":
        # The top score is primary whatever the thresholds; 0.5 on a calibrated score means
        # "more likely than not", which is what a secondary label should say.
        return thresholds
    grid = np.round(np.arange(0.5, 0.91, 0.05), 2)
    current = _macro_f1(gold, primary_indices(scores, thresholds, rule))
    for _ in range(3):  # a few sweeps over labels are enough for five thresholds
        for j in range(len(LABELS)):
            for t in grid:
                trial = thresholds.copy()
                trial[j] = t
                f1 = _macro_f1(gold, primary_indices(scores, trial, rule))
                if f1 > current + 1e-9:
                    current, thresholds = f1, trial
    return thresholds


def tune_policy(
    scores: np.ndarray,
    gold: Sequence[str],
    calibration: dict[str, tuple[float, float]],
    folds: int = 5,
    seed: int = 13,
) -> tuple[Policy, dict[str, float]]:
    """Choose the primary rule, per-label thresholds and review thresholds on held-out scores.

    Tuned thresholds always look better on the rows they were tuned on; on a held-out split of
    a thousand or so rows that optimism is as large as the real differences between rules. So the
    rule is chosen by cross-validation inside the held-out split (thresholds fitted on k-1 folds,
    scored on the k-th), and only then are the chosen rule's thresholds fitted on all of it.

    Returns:
        The policy, and each rule's cross-validated macro-F1 (recorded in the model's metadata).
    """
    gold_idx = np.array([LABELS.index(g) for g in gold], dtype=np.int64)
    fold_of = np.random.default_rng(seed).permutation(len(gold_idx)) % max(2, folds)
    estimates: dict[str, float] = {}
    for rule in ("priority", "argmax"):
        f1s = []
        for k in range(max(2, folds)):
            fit, test = fold_of != k, fold_of == k
            if not test.any() or not fit.any():
                continue
            thresholds = _fit_thresholds(scores[fit], gold_idx[fit], rule)
            f1s.append(_macro_f1(gold_idx[test], primary_indices(scores[test], thresholds, rule)))
        estimates[rule] = float(np.mean(f1s)) if f1s else 0.0
    # Ties go to the priority rule, which DESIGN.md prescribes when several labels apply.
    rule = "priority" if estimates["priority"] >= estimates["argmax"] else "argmax"
    fitted = _fit_thresholds(scores, gold_idx, rule)
    policy = Policy(
        calibration=calibration,
        thresholds={lab: float(t) for lab, t in zip(LABELS, fitted, strict=True)},
        primary_rule=rule,
    )
    preds = [d[0] for d in decide(scores, policy)]
    review: dict[str, float] = {}
    for j, label in enumerate(LABELS):
        pairs = sorted(
            ((scores[i, j], gold[i] == label) for i in range(len(gold)) if preds[i] == label),
            reverse=True,
        )
        cutoff = policy.thresholds[label]
        hits = 0
        for k, (s, ok) in enumerate(pairs, 1):
            hits += ok
            if hits / k >= REVIEW_PRECISION:
                cutoff = max(policy.thresholds[label], float(s))
        review[label] = round(min(cutoff, 0.95), 4)
    policy.review_thresholds = review
    return policy, {rule: round(v, 4) for rule, v in estimates.items()}


def _start(
    nlp: spacy.language.Language, examples: list[SpacyExample], settings: dict[str, Any]
) -> Optimizer:
    """Add the labels, initialise the pipeline and return the optimizer the settings ask for."""
    textcat: Any = nlp.get_pipe(COMPONENT)
    for label in LABELS:
        textcat.add_label(label)
    nlp.initialize(lambda: examples[:500])
    # Parameter averaging: the average of the weights seen during training generalises better
    # than the last weights, which chase the most recent minibatches.
    return Adam(
        learn_rate=float(settings.get("learn_rate", 0.001)),
        L2=float(settings.get("l2", 1e-6)),
        use_averages=bool(settings.get("use_averages", True)),
    )


def _epoch(
    nlp: spacy.language.Language,
    optimizer: Optimizer,
    examples: list[SpacyExample],
    settings: dict[str, Any],
    rng: random.Random,
) -> float:
    """One seeded pass over the shuffled examples; returns the epoch's loss."""
    rng.shuffle(examples)
    losses: dict[str, float] = {}
    for batch in minibatch(examples, size=int(settings.get("batch_size", 64))):
        nlp.update(batch, drop=float(settings.get("dropout", 0.2)), sgd=optimizer, losses=losses)
    return float(losses.get(COMPONENT, 0.0))


def train(
    examples: Sequence[Example],
    out_dir: Path,
    *,
    config_path: Path = DEFAULT_CONFIG,
    held_out: float = 0.15,
    seed: int | None = None,
    epochs: int | None = None,
    data_description: dict[str, Any] | None = None,
    extra_train: Sequence[Example] = (),
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Train a model, calibrate it on a held-out split, and write it with its metadata and card.

    Args:
        examples: Labelled examples.
        out_dir: Folder to write the spaCy pipeline, ``triage_meta.json`` and ``MODEL_CARD.md`` to.
        config_path: The architecture config (``classifiers/configs/*.cfg``).
        held_out: Fraction kept back for early stopping, calibration and thresholds.
        seed: Overrides the config's seed.
        epochs: Overrides the config's epoch count.
        data_description: What the data was (paths, flags), recorded in the metadata.
        extra_train: Examples used for training only, never held out (the starter corpus when a
            user's own data is given: thresholds should fit the user's data, not our corpus).
        log: Progress printer.

    Returns:
        The metadata written to ``triage_meta.json``.
    """
    started = time.monotonic()
    nlp, settings = build_pipeline(config_path)
    seed = int(seed if seed is not None else settings.get("seed", 13))
    n_epochs = int(epochs if epochs is not None else settings.get("epochs", 10))
    fix_random_seed(seed)
    rng = random.Random(seed)
    train_part, dev_part = split(examples, held_out, seed)
    train_part = list(train_part) + list(extra_train)
    counts = Counter(ex.label for ex in train_part)
    log(
        f"training on {len(train_part)} examples, holding out {len(dev_part)} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})"
    )
    train_examples = _spacy_examples(nlp, train_part)
    optimizer = _start(nlp, train_examples, settings)
    dev_texts = [ex.text for ex in dev_part]
    dev_gold = [ex.label for ex in dev_part]

    best: tuple[float, bytes, int] | None = None
    for epoch in range(1, n_epochs + 1):
        loss = _epoch(nlp, optimizer, train_examples, settings, rng)
        with nlp.use_params(optimizer.averages):
            clf = Classifier(nlp, {"policy": Policy(primary_rule="argmax").to_json()}, out_dir)
            f1 = evaluate_labels(dev_gold, [p.label for p in clf.predict(dev_texts)])["macro_f1"]
            if best is None or f1 > best[0]:
                best = (f1, nlp.to_bytes(), epoch)
        log(f"epoch {epoch:>2}/{n_epochs}  loss {loss:8.3f}  held-out macro-F1 {f1:.4f}")
    assert best is not None
    nlp.from_bytes(best[1])
    log(f"keeping epoch {best[2]} (held-out macro-F1 {best[0]:.4f})")

    raw = Classifier(nlp, {}, out_dir).raw_scores(dev_texts)
    calibration: dict[str, tuple[float, float]] = {}
    for j, label in enumerate(LABELS):
        y = np.array([float(label in ex.labels) for ex in dev_part])
        if 0 < y.sum() < len(y):
            a, b = fit_platt(raw[:, j], y)
            calibration[label] = (round(a, 6), round(b, 6))
    scores = calibrate(raw, calibration)
    policy, rule_estimates = tune_policy(scores, dev_gold, calibration, seed=seed)
    decisions = decide(scores, policy)
    held_metrics = evaluate_labels(dev_gold, [d[0] for d in decisions])
    review_rate = sum(d[2] for d in decisions) / max(1, len(decisions))
    auto = [(g, d[0]) for g, d in zip(dev_gold, decisions, strict=True) if not d[2]]
    auto_acc = sum(g == p for g, p in auto) / max(1, len(auto))
    log(
        f"calibrated; rule={policy.primary_rule} (cross-validated macro-F1 "
        + ", ".join(f"{r} {v:.4f}" for r, v in rule_estimates.items())
        + f"); held-out macro-F1 {held_metrics['macro_f1']:.4f}; "
        f"needs_review {review_rate:.1%}; accuracy when not flagged {auto_acc:.1%}"
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(out_dir)
    digest = hashlib.sha256(best[1]).hexdigest()[:10]
    meta: dict[str, Any] = {
        "version": f"{config_path.stem}-{digest}",
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "architecture": config_path.name,
        "labels": list(LABELS),
        "seed": seed,
        "epochs": n_epochs,
        "best_epoch": best[2],
        "policy": policy.to_json(),
        "rule_selection_cv_macro_f1": rule_estimates,
        "data": {
            **(data_description or {}),
            "train_examples": len(train_part),
            "held_out_examples": len(dev_part),
            "by_label": dict(sorted(Counter(ex.label for ex in [*examples, *extra_train]).items())),
            "by_origin": dict(
                sorted(Counter(ex.origin for ex in [*examples, *extra_train]).items())
            ),
        },
        "held_out": {
            **held_metrics,
            "needs_review_rate": round(review_rate, 4),
            "accuracy_when_not_flagged": round(auto_acc, 4),
        },
        "training_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    log(f"wrote {out_dir} (version {meta['version']})")
    return meta


def model_card(meta: dict[str, Any], evaluations: dict[str, Any] | None = None) -> str:
    """Render the model card: data, metrics per label, thresholds and known limits."""
    policy = meta["policy"]
    held = meta["held_out"]
    lines = [
        f"# Model card: {meta['version']}",
        "",
        (
            f"Created {meta['created_at']} from `{meta['architecture']}` (spaCy "
            f"`textcat_multilabel`), seed {meta['seed']}, best epoch {meta['best_epoch']} of "
            f"{meta['epochs']}."
        ),
        "",
        "## Data",
        (
            f"- Sources: {json.dumps(meta['data'].get('paths', []))}; starter corpus included: "
            f"{meta['data'].get('with_starter', False)}"
        ),
        (
            f"- {meta['data']['train_examples']} training and {meta['data']['held_out_examples']} "
            "held-out examples (stratified, seeded split)."
        ),
        "- Examples per label: "
        + ", ".join(f"{k} {v}" for k, v in meta["data"]["by_label"].items()),
        "",
        "## Held-out metrics",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for lab, m in held["per_label"].items():
        lines.append(
            f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        )
    lines += [
        "",
        (
            f"Macro-F1 {held['macro_f1']:.4f}, accuracy {held['accuracy']:.4f}; "
            f"{held['needs_review_rate']:.1%} flagged for review, "
            f"{held['accuracy_when_not_flagged']:.1%} accurate when not flagged."
        ),
        "",
        "## Decision policy (chosen on the held-out split)",
        f"- Primary rule: `{policy['primary_rule']}`; margin between the top two scores: {policy['margin']}",
    ]
    estimates = meta.get("rule_selection_cv_macro_f1")
    if estimates:
        lines.append(
            "- Rule chosen by 5-fold cross-validation inside the held-out split (macro-F1: "
            + ", ".join(f"{rule} {value:.4f}" for rule, value in estimates.items())
            + "); a label applies when its calibrated score clears its threshold (0.5 or more)."
        )
    lines += [
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
    evaluations = evaluations or meta.get("evaluations")
    if evaluations:
        lines += ["", "## Evaluations (`triage evaluate --record`)", ""]
        for name, res in evaluations.items():
            line = f"- {name}: macro-F1 {res['macro_f1']:.4f}, accuracy {res['accuracy']:.4f} (n={res['n']})"
            if res.get("baseline_macro_f1") is not None:
                line += f"; TF-IDF + LR baseline {res['baseline_macro_f1']:.4f}"
            lines.append(line)
    lines += [
        "",
        "## Known limits",
        "- English only; other languages fall back to low-confidence guesses and are flagged.",
        "- A bag-of-n-grams model: it reads words, word pairs and word stems, not long-range",
        "  context, so heavy sarcasm without cue words and very long mixed messages are its weakest",
        "  cases.",
        "- Scores are calibrated on the held-out split of the training data; on a very different",
        "  stream (a new industry or platform) re-check the review rate and retrain with corrections.",
        "- Secondary labels come from the same scores; they are suggestions for reviewers.",
        '  Conditional purchase talk ("we\'d buy if you had SSO") often keeps only the primary.',
        "",
    ]
    return "\n".join(lines)
