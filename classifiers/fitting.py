"""The training loop: build a pipeline from a config, train it, score held-out sources by epoch."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from spacy.training import Example as SpacyExample
from spacy.util import fix_random_seed, minibatch
from spacy.vocab import Vocab
from thinc.api import Adam, Config, Optimizer

from classifiers.augment import balance_group, balanced_epoch, mixed_examples, starter_weighted
from classifiers.data import Example, assign_folds, source_family
from classifiers.model import COMPONENT, Classifier
from classifiers.progress import Progress
from classifiers.tokenizer import FastTokenizer
from triage.models import LABELS
from triage.normalize import normalize

CONFIG_DIR = Path(__file__).parent / "configs"
# The shipped architecture, and the CLI's default (`triage train --arch vectors`): a script that
# calls train() or fit_classifier() without a config gets the model the project ships.
DEFAULT_CONFIG = CONFIG_DIR / "textcat_vectors.cfg"


def config_for(arch: str) -> Path:
    """The checked-in config of an architecture name (``vectors`` -> ``textcat_vectors.cfg``).

    Raises:
        ValueError: No such config; the message lists the names there are.
    """
    cfg = CONFIG_DIR / f"textcat_{arch}.cfg"
    if not cfg.is_file():
        names = sorted(p.stem.removeprefix("textcat_") for p in CONFIG_DIR.glob("textcat_*.cfg"))
        raise ValueError(f"unknown architecture '{arch}' (one of: {', '.join(names)})")
    return cfg


def build_pipeline(
    config_path: Path, vocab: Vocab | None = None
) -> tuple[spacy.language.Language, dict[str, Any]]:
    """Create an untrained pipeline from a checked-in config; return it with the training settings."""
    config = Config().from_disk(config_path)
    training = dict(config.pop("training", {}))
    nlp = spacy.util.load_model_from_config(
        config, vocab=vocab if vocab is not None else True, auto_fill=True, validate=True
    )
    return nlp, training


class DocCache:
    """The training docs of one run, made once and shared by all its models (folds and final).

    Tokenizing and building spaCy examples costs as much as an epoch; a run trains k + 1 models
    on overlapping data. All of them share one vocabulary (and so one vector table).
    """

    def __init__(self) -> None:
        """Start empty; the first pipeline built supplies the vocabulary."""
        self.vocab: Vocab | None = None
        self._examples: dict[tuple[str, tuple[float, ...]], SpacyExample] = {}

    def examples(
        self, nlp: spacy.language.Language, data: Sequence[Example], soft: float = 0.0
    ) -> list[SpacyExample]:
        """spaCy examples for ``data`` (the same object each time for the same text and cats).

        ``soft`` is the share of a teacher row's targets taken from the teacher (:func:`gold_cats`).
        """
        out = []
        for ex in data:
            cats = gold_cats(ex, soft)
            key = (ex.text, tuple(cats.values()))
            found = self._examples.get(key)
            if found is None:
                # The pipeline's tokenizer normalises; configs with spaCy's own tokenizer get it here.
                doc = nlp.make_doc(ex.text if _normalising(nlp) else normalize(ex.text))
                doc.cats = cats
                # The text classifier reads the gold cats from the reference and never changes
                # the predicted doc while training, so one doc can be both.
                found = self._examples[key] = SpacyExample(doc, doc)
            out.append(found)
        return out


def gold_cats(example: Example, soft: float = 0.0) -> dict[str, float]:
    """The training target per label: 1 for the labels that apply, else 0.

    With ``soft`` above 0, a teacher row (one with ``teacher_probs``) gets
    ``(1 - soft) * applies + soft * probability`` instead, so the student learns how sure the
    teacher was, not only what it picked (``teacher_soft`` in the config).
    """
    applies = {lab: float(lab in example.labels) for lab in LABELS}
    probs = example.teacher_probs
    if soft <= 0 or probs is None:
        return applies
    return {lab: (1 - soft) * applies[lab] + soft * probs.get(lab, 0.0) for lab in LABELS}


def _normalising(nlp: spacy.language.Language) -> bool:
    return isinstance(nlp.tokenizer, FastTokenizer)


def _start(
    nlp: spacy.language.Language, examples: list[SpacyExample], settings: dict[str, Any]
) -> Optimizer:
    """Add the labels, initialise the pipeline and return the optimizer the settings ask for."""
    textcat: Any = nlp.get_pipe(COMPONENT)
    for label in LABELS:
        textcat.add_label(label)
    if settings.get("teacher_soft"):
        # spaCy's multi-label text classifier accepts only 0/1 gold values, although its loss
        # (score minus truth) is defined for any target in [0, 1]; soft teacher targets need it.
        textcat._validate_categories = lambda examples: None
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
    textcat: Any = nlp.get_pipe(COMPONENT)
    for batch in minibatch(examples, size=int(settings.get("batch_size", 64))):
        # The component's own update: nlp.update would copy every doc of every batch first,
        # which costs as much as the update itself and changes nothing for a text classifier.
        textcat.update(
            batch, drop=float(settings.get("dropout", 0.2)), sgd=optimizer, losses=losses
        )
    return float(losses.get(COMPONENT, 0.0))


def fit_pipeline(
    config_path: Path,
    data: Sequence[Example],
    epochs: int,
    seed: int,
    score_texts: Sequence[str] = (),
    on_epoch: Callable[[int, float], None] | None = None,
    cache: DocCache | None = None,
) -> tuple[spacy.language.Language, list[np.ndarray]]:
    """Train one pipeline for a fixed number of epochs, seeded.

    Args:
        config_path: The architecture config.
        data: Training examples.
        epochs: Passes over the data.
        seed: Random seed (shuffling, initial weights, dropout).
        score_texts: Texts to score (raw, uncalibrated) after every epoch, with averaged weights.
        on_epoch: Called with (epoch, loss) after every epoch.
        cache: Docs shared with the other models of the same run.

    Returns:
        The trained pipeline (averaged weights) and one (len(score_texts), labels) raw score
        matrix per epoch.
    """
    cache = cache or DocCache()
    nlp, settings = build_pipeline(config_path, cache.vocab)
    vectors = settings.get("vectors")
    if vectors and nlp.vocab.vectors.name != vectors:
        from classifiers.vectors import install

        install(nlp, str(vectors))
    cache.vocab = nlp.vocab
    fix_random_seed(seed)
    rng = random.Random(seed)
    mixed = mixed_examples(data, int(settings.get("mixed_examples", 0)), seed)
    balance = bool(settings.get("balance_groups", False))
    weighted = (list(data) if balance else starter_weighted(data, settings)) + mixed
    examples = cache.examples(nlp, weighted, float(settings.get("teacher_soft", 0.0)))
    # Balancing groups: the starter corpus as one group, every other file as one.
    groups = [balance_group(ex) for ex in weighted]
    shares = {
        g: float(settings.get("starter_weight", 1)) if g == "starter" else 1.0 for g in groups
    }
    balance = balance and len(shares) > 1
    optimizer = _start(nlp, examples, settings)
    per_epoch: list[np.ndarray] = []
    for epoch in range(1, epochs + 1):
        chosen = balanced_epoch(examples, groups, shares, rng) if balance else examples
        loss = _epoch(nlp, optimizer, chosen, settings, rng)
        if score_texts:
            with nlp.use_params(optimizer.averages):
                per_epoch.append(Classifier(nlp, {}, Path(".")).raw_scores(score_texts))
        if on_epoch:
            on_epoch(epoch, loss)
    with nlp.use_params(optimizer.averages):
        final = nlp.to_bytes()
    nlp.from_bytes(final)
    return nlp, per_epoch


def teacher_rows_for_fold(
    held_out: Sequence[str], teacher_rows: Mapping[str, Sequence[Example]]
) -> list[Example]:
    """The teacher rows a cross-source fold that holds out ``held_out`` families may train on.

    A fold that holds out a family a teacher left out trains on that teacher's rows, so no fold
    learns from a teacher that saw what the fold scores. A fold holding out no such family (only
    files no teacher saw) takes the rows of the teacher that saw every family (``""``); one holding
    out two or more gets none, as no teacher left them all out.
    """
    taught = [f for f in held_out if f and f in teacher_rows]
    if len(taught) == 1:
        return list(teacher_rows[taught[0]])
    return [] if taught else list(teacher_rows.get("", []))


def cross_source_scores(
    config_path: Path,
    examples: Sequence[Example],
    folds: int,
    epochs: int,
    seed: int,
    progress: Progress | None = None,
    cache: DocCache | None = None,
    teacher_rows: Mapping[str, Sequence[Example]] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Out-of-source raw scores for every example, after every epoch.

    The examples' source families (:func:`classifiers.data.source_family`) are spread over
    ``folds`` folds; for each fold a model is trained on the other folds and scores this one. Every
    score is therefore one the model gives to a source it never trained on, which is what a
    customer's stream is. With a single family there is no other source to learn from, and the
    folds fall back to a seeded, label-stratified split (in-source scores; the metadata says so).

    ``teacher_rows`` (:func:`classifiers.data.load_teacher_rows`) are extra training rows that
    are never scored; :func:`teacher_rows_for_fold` picks each fold's (none for in-source splits).

    Returns:
        ``(scores, fold, fold_of_family)``: scores has shape (epochs, n, labels); fold is each
        example's fold index.
    """
    teacher_rows = teacher_rows or {}
    families = [source_family(ex) for ex in examples]
    fold_of_family = assign_folds(families, folds)
    if len(fold_of_family) >= 2:
        fold = np.array([fold_of_family[f] for f in families], dtype=np.int64)
    else:
        # Seeded shuffle, then deal each label's examples round the folds in turn.
        shuffled = np.random.default_rng(seed).permutation(len(examples)).tolist()
        fold = np.zeros(len(examples), dtype=np.int64)
        dealt: Counter[str] = Counter()
        for i in shuffled:
            fold[i] = dealt[examples[i].label] % max(2, folds)
            dealt[examples[i].label] += 1
        fold_of_family = {}
    k = int(fold.max()) + 1
    scores = np.zeros((epochs, len(examples), len(LABELS)))
    for j in range(k):
        test = np.flatnonzero(fold == j)
        train_part = [examples[i] for i in np.flatnonzero(fold != j).tolist()]
        names = sorted(f for f, v in fold_of_family.items() if v == j) or [f"split {j + 1}"]
        if fold_of_family:
            train_part += teacher_rows_for_fold(names, teacher_rows)

        def report(epoch: int, loss: float, j: int = j, names: list[str] = names) -> None:
            if progress:
                progress.advance(
                    f"fold {j + 1}/{k} (held out: {', '.join(names)}) epoch {epoch}/{epochs} "
                    f"loss {loss:.3f}"
                )

        _, per_epoch = fit_pipeline(
            config_path,
            train_part,
            epochs,
            seed,
            score_texts=[examples[i].text for i in test.tolist()],
            on_epoch=report,
            cache=cache,
        )
        for e, raw in enumerate(per_epoch):
            scores[e, test] = raw
    return scores, fold, fold_of_family
