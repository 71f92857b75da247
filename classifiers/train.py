"""Train, calibrate and package a triage text classifier (spaCy ``textcat_multilabel``).

The steps live in their own modules: :mod:`classifiers.fitting` (the training loop and the
cross-source folds), :mod:`classifiers.augment` (what each epoch sees),
:mod:`classifiers.calibration` and :mod:`classifiers.review` (the decision policy) and
:mod:`classifiers.card` (the model card). This module runs them in order and writes the model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import spacy

from classifiers.calibration import fit_policy, fold_macro_f1
from classifiers.card import model_card
from classifiers.data import (
    Example,
    from_starter,
    load_teacher_rows,
    source_family,
    teacher_rows_without,
)
from classifiers.fitting import (
    DEFAULT_CONFIG,
    DocCache,
    build_pipeline,
    cross_source_scores,
    fit_pipeline,
)
from classifiers.model import COMPONENT, META_FILE, Policy
from classifiers.progress import Progress
from classifiers.review import review_settings
from triage.models import LABELS


def _log(msg: str) -> None:
    print(msg, flush=True)


def fit_classifier(
    examples: Sequence[Example],
    *,
    config_path: Path = DEFAULT_CONFIG,
    seed: int | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    log: Callable[[str], None] = _log,
    rich: bool | None = None,
    teacher_rows: Mapping[str, Sequence[Example]] | None = None,
    left_out: str = "",
) -> tuple[spacy.language.Language, Policy, dict[str, Any]]:
    """Choose the epoch count and the decision policy out of source, then train on everything.

    1. Cross-source folds (:func:`cross_source_scores`): k models, each scoring sources it did
       not train on, after every epoch.
    2. The epoch count with the best mean per-fold macro-F1 on those scores.
    3. Calibration, thresholds and review thresholds on that epoch's out-of-source scores
       (:func:`fit_policy`), so that the review flags hold on streams the model has not seen.
    4. The final model on all examples for that many epochs.

    Teacher-labelled rows (:mod:`classifiers.teacher`) train but are never scored: each fold
    takes those of a teacher that did not see the fold's sources, the final model those of the
    teacher that saw all. They are used when the config's ``teacher_rows`` is on and the starter
    corpus is among the examples; ``teacher_rows`` given here replaces what would be loaded.
    ``left_out`` names a source family the caller kept out of ``examples`` (leave-one-source-out):
    the teacher rows are then restricted to those that never saw it
    (:func:`classifiers.data.teacher_rows_without`).

    Returns:
        The trained pipeline, its policy and a description of the fit (for the metadata).
    """
    nlp_settings = build_pipeline(config_path)[1]
    seed = int(seed if seed is not None else nlp_settings.get("seed", 13))
    n_epochs = int(epochs if epochs is not None else nlp_settings.get("epochs", 10))
    k = int(folds if folds is not None else nlp_settings.get("folds", 4))
    counts = Counter(ex.label for ex in examples)
    families = Counter(source_family(ex) for ex in examples)
    log(
        f"training on {len(examples)} examples ({', '.join(f'{a}={b}' for a, b in sorted(counts.items()))}) "
        f"from {len(families)} source families"
    )
    if teacher_rows is None:
        uses_starter = any(from_starter(ex) for ex in examples)
        teacher_rows = (
            load_teacher_rows() if nlp_settings.get("teacher_rows") and uses_starter else {}
        )
    if left_out:
        teacher_rows = teacher_rows_without(teacher_rows, left_out)
    if teacher_rows:
        log(
            f"with {len(teacher_rows.get('', []))} teacher-labelled rows for the final model "
            f"({len(teacher_rows) - ('' in teacher_rows)} held-out teachers for the folds)"
        )
    total = (min(k, len(families)) if len(families) >= 2 else max(2, k)) * n_epochs
    with Progress("training", total + n_epochs, log, rich=rich) as progress:
        progress.note(
            f"cross-source folds: {min(k, len(families)) if len(families) >= 2 else max(2, k)} "
            f"models x {n_epochs} epochs, then the final model"
        )
        cache = DocCache()
        raw, fold, fold_of_family = cross_source_scores(
            config_path, examples, k, n_epochs, seed, progress, cache, teacher_rows
        )
        gold = np.array([LABELS.index(ex.label) for ex in examples], dtype=np.int64)
        by_epoch = [round(fold_macro_f1(raw[e], gold, fold), 4) for e in range(n_epochs)]
        best = int(np.argmax(by_epoch)) + 1
        progress.note(
            "out-of-source macro-F1 by epoch: "
            + ", ".join(f"{e + 1}: {v:.4f}" for e, v in enumerate(by_epoch))
            + f"; keeping {best} epochs"
        )
        policy, measured = fit_policy(raw[best - 1], examples, fold, nlp_settings, seed)
        progress.note(
            f"policy: rule {policy.primary_rule}; out-of-source macro-F1 {measured['macro_f1']:.4f} "
            f"(rules: {', '.join(f'{r} {v:.4f}' for r, v in measured['rule_macro_f1'].items())}); "
            f"{measured['needs_review_rate']:.1%} flagged, "
            f"{measured['accuracy_when_not_flagged']:.1%} correct when not flagged"
        )

        def report(epoch: int, loss: float) -> None:
            progress.advance(f"final model epoch {epoch}/{best} loss {loss:.3f}")

        final = [*examples, *teacher_rows.get("", [])]
        nlp, _ = fit_pipeline(config_path, final, best, seed, on_epoch=report, cache=cache)
        # The remaining planned steps were epochs the final model did not need.
        progress.advance("final model trained", steps=n_epochs - best)
    fit = {
        "teacher_rows": {k or "(all families)": len(v) for k, v in sorted(teacher_rows.items())},
        "seed": seed,
        "epochs": n_epochs,
        "best_epoch": best,
        "folds": {fam: j for fam, j in sorted(fold_of_family.items())}
        or f"{int(fold.max()) + 1} label-stratified splits (one source only: in-source scores)",
        "macro_f1_by_epoch": by_epoch,
        "cross_source": measured,
        "review": review_settings(nlp_settings),
    }
    return nlp, policy, fit


def model_version(arch: str, weights: bytes, policy: dict[str, Any]) -> str:
    """A model's version: its architecture and a digest of its weights and decision policy.

    The policy is part of it because two models with the same weights but other thresholds
    route differently, and the registry, the gate and the cards tell models apart by version.

    Args:
        arch: The architecture config's stem (``textcat_vectors``).
        weights: The serialised weights of the text classifier.
        policy: The decision policy as written to ``triage_meta.json``.

    Returns:
        ``"<arch>-<10 hex digits>"``.
    """
    digest = hashlib.sha256(weights)
    digest.update(json.dumps(policy, sort_keys=True).encode())
    return f"{arch}-{digest.hexdigest()[:10]}"


def train(
    examples: Sequence[Example],
    out_dir: Path,
    *,
    config_path: Path = DEFAULT_CONFIG,
    seed: int | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    data_description: dict[str, Any] | None = None,
    log: Callable[[str], None] = _log,
    rich: bool | None = None,
) -> dict[str, Any]:
    """Train a model (:func:`fit_classifier`) and write it with its metadata and model card.

    Args:
        examples: Labelled examples (with the starter corpus when it is to be used).
        out_dir: Folder to write the spaCy pipeline, ``triage_meta.json`` and ``MODEL_CARD.md`` to.
        config_path: The architecture config (``classifiers/configs/*.cfg``).
        seed: Overrides the config's seed.
        epochs: Overrides the config's largest epoch count.
        folds: Overrides the config's number of cross-source folds.
        data_description: What the data was (paths, flags), recorded in the metadata.
        log: Progress printer.
        rich: Draw a progress bar (None: when stderr is a terminal).

    Returns:
        The metadata written to ``triage_meta.json``.
    """
    started = time.monotonic()
    nlp, policy, fit = fit_classifier(
        examples,
        config_path=config_path,
        seed=seed,
        epochs=epochs,
        folds=folds,
        log=log,
        rich=rich,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(out_dir)
    weights = (out_dir / COMPONENT / "model").read_bytes()
    vectors_meta = None
    if nlp.vocab.vectors.shape[0]:
        from classifiers.vectors import load_table

        vectors_meta = load_table(str(nlp.vocab.vectors.name))[2]
    meta: dict[str, Any] = {
        "version": model_version(config_path.stem, weights, policy.to_json()),
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "architecture": config_path.name,
        "labels": list(LABELS),
        **{k: fit[k] for k in ("seed", "epochs", "best_epoch", "review")},
        "policy": policy.to_json(),
        "vectors": vectors_meta,
        "data": {
            **(data_description or {}),
            "train_examples": len(examples),
            "teacher_rows": fit["teacher_rows"],
            "by_label": dict(sorted(Counter(ex.label for ex in examples).items())),
            "by_origin": dict(sorted(Counter(ex.origin for ex in examples).items())),
            "by_source_family": dict(sorted(Counter(source_family(ex) for ex in examples).items())),
        },
        "cross_source_folds": fit["folds"],
        "macro_f1_by_epoch": fit["macro_f1_by_epoch"],
        "cross_source": fit["cross_source"],
        "training_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    log(f"wrote {out_dir} (version {meta['version']})")
    return meta
