"""``triage classify``, ``triage train`` and ``triage evaluate``: the classifier's commands."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from triage.cli.options import ConfigOpt, DbOpt, load_config_or_exit, writable_or_exit
from triage.cli.options import fail as _fail

MODEL_HELP = "Model folder (default: the active model, see `triage models list`)."


def _active_model(model: Path | None, config: str | None, db: str | None) -> Path:
    """``--model`` when given, else the registry's active model (the shipped one at first)."""
    if model is not None:
        from classifiers.model import META_FILE

        # Said before any input is read, as one line (it was a ModelError traceback).
        if not (model / META_FILE).is_file():
            _fail(
                f"{model} is not a triage model (no {META_FILE}); train one with "
                "`triage train --starter-only --out DIR`",
                2,
            )
        return model
    from classifiers.registry import RegistryError
    from flows.learning import active_model

    try:
        return active_model(load_config_or_exit(config, db)).path
    except RegistryError as exc:
        _fail(str(exc), 2)


def classify(
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="CSV (text column; comma, semicolon, tab or | delimited), JSONL (text field) "
            "or a JSON array of objects.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    model: Annotated[Path | None, typer.Option("--model", help=MODEL_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per nlp.pipe batch.")] = 2000,
    text_column: Annotated[
        str, typer.Option("--text-column", help="CSV column / JSON field with the text.")
    ] = "text",
    id_column: Annotated[
        str, typer.Option("--id-column", help="Column / field copied to the output as 'id'.")
    ] = "id",
    source_column: Annotated[
        str,
        typer.Option(
            "--source-column",
            help="Column / field naming each row's source: scores adapt to the label mix of the "
            "row's own source (rows without one: the file is their source).",
        ),
    ] = "source",
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt/--no-adapt",
            help="Adapt scores to each source's label mix (README, \"Adapting to each source's "
            'label mix").',
        ),
    ] = True,
    adapt_to: Annotated[
        str,
        typer.Option(
            "--adapt-to",
            help="'neighbours': each row's scores adapt to the mix of the rows of its source "
            "(without one: of the file) that read most like it; 'source': to its source's one mix.",
        ),
    ] = "neighbours",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Classify every row of a file; one JSON object per input row, in input order."""
    from classifiers.adapt import describe_streams
    from triage.cli.classify_io import classify_file

    model = _active_model(model, config, db)
    try:
        counts = classify_file(
            input,
            output,
            model,
            batch_size,
            text_column,
            id_column,
            source_column,
            adapt,
            adapt_to,
            log=lambda line: typer.echo(line, err=True),
        )
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)
        return
    for line in describe_streams(counts["streams"]):
        typer.echo(line, err=True)
    typer.echo(
        f"classified {counts['ok']} rows, {counts['errors']} row errors -> {output}", err=True
    )


def _config_for(arch: str) -> Path:
    from classifiers.fitting import config_for

    try:
        return config_for(arch)
    except ValueError as exc:
        _fail(str(exc), 2)


ARCH_HELP = "Architecture config classifiers/configs/textcat_ARCH.cfg: vectors, bow, cnn, ensemble."


def train(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the trained model to.")],
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="CSV/JSONL files or folders (text, label).")
    ] = None,
    with_starter: Annotated[
        bool, typer.Option("--with-starter", help="Add the shipped starter corpus.")
    ] = False,
    starter_only: Annotated[
        bool, typer.Option("--starter-only", help="Train on the starter corpus only.")
    ] = False,
    arch: Annotated[str, typer.Option(help=ARCH_HELP)] = "vectors",
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the config's).")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Largest epoch count (default: the config's).")
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="Cross-source folds for calibration (default: config's).")
    ] = None,
) -> None:
    """Train a model from labelled CSV/JSONL data and write a loadable spaCy pipeline."""
    from classifiers.data import DataError, load_examples, load_starter
    from classifiers.train import train as run_train

    paths = [str(p) for p in data or []]
    if not paths and not (with_starter or starter_only):
        _fail("give --data PATH (and/or --with-starter), or --starter-only", 2)
    writable_or_exit(out, folder=True)  # before the training, not after it
    cfg = _config_for(arch)
    try:
        examples = [] if starter_only else load_examples(paths)
        if with_starter or starter_only:
            examples += load_starter()
    except DataError as exc:
        _fail(str(exc), 2)
        return
    counts = Counter(ex.label for ex in examples)
    if len(counts) < 2:
        _fail("training needs examples of at least two labels", 2)
    lone = sorted(label for label, n in counts.items() if n < 2)
    if lone:
        # With one example a label has nothing left to train on in the calibration split that
        # scores it (spaCy then refuses an empty training set with E930).
        _fail(f"training needs at least 2 examples of each label; only 1 of: {', '.join(lone)}", 2)
    run_train(
        examples,
        out,
        config_path=cfg,
        seed=seed,
        epochs=epochs,
        folds=folds,
        data_description={
            "paths": [] if starter_only else [str(Path(p).resolve()) for p in paths],
            "with_starter": with_starter or starter_only,
        },
        log=lambda msg: typer.echo(msg, err=True),
    )


def evaluate(
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="Labelled CSV/JSONL files or folders.")
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", help=MODEL_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    baseline: Annotated[
        bool, typer.Option(help="Also train and score a TF-IDF + LR baseline.")
    ] = True,
    balanced: Annotated[
        int | None, typer.Option(help="Score a label-balanced sample of N per label.")
    ] = None,
    only_labels: Annotated[
        str | None,
        typer.Option(help="Score only rows with these gold labels (comma-separated)."),
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="List the misclassified rows (text, gold, predicted).")
    ] = False,
    report_dir: Annotated[Path, typer.Option(help="Where the confusion-matrix PNG goes.")] = Path(
        "reports"
    ),
    record_as: Annotated[
        str | None, typer.Option("--record", help="Save the result in the model card under NAME.")
    ] = None,
    loso: Annotated[
        bool,
        typer.Option(
            "--leave-one-source-out",
            help="Train without each source family in turn and score the one left out.",
        ),
    ] = False,
    with_starter: Annotated[
        bool,
        typer.Option("--with-starter", help="Leave-one-source-out: train on --data + starter."),
    ] = False,
    starter_only: Annotated[
        bool,
        typer.Option(
            "--starter-only",
            help="Leave-one-source-out: train on the starter corpus only; --data is never "
            "trained on, each file is scored as a new source.",
        ),
    ] = False,
    test_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--test-data", help="Leave-one-source-out: score a left-out file on these rows."
        ),
    ] = None,
    leave_out: Annotated[
        list[str] | None,
        typer.Option(
            "--leave-out",
            help="Leave-one-source-out: leave out only this family (repeatable; default all).",
        ),
    ] = None,
    arch: Annotated[str, typer.Option(help=ARCH_HELP)] = "vectors",
    seed: Annotated[int | None, typer.Option(help="Leave-one-source-out: seed.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Leave-one-source-out: epochs.")] = None,
    folds: Annotated[int | None, typer.Option(help="Leave-one-source-out: inner folds.")] = None,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt/--no-adapt",
            help="Adapt each file's (or left-out source's) scores to its label mix, as a run "
            "adapts each source's.",
        ),
    ] = True,
    one_file: Annotated[
        bool,
        typer.Option(
            "--one-file",
            help="Score the rows (--balanced's sample, else all) as one file without a source "
            "column, as `triage classify` would.",
        ),
    ] = False,
    adapt_to: Annotated[
        str,
        typer.Option(
            "--adapt-to",
            help="'source' (default, so recorded figures compare): each file (or the one file, "
            "or left-out group) to its one mix; 'neighbours' (as `triage classify`): "
            "each row to the rows of its file (or group) most like it.",
        ),
    ] = "source",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Per-label precision/recall/F1, macro-F1 and confusion matrix, per file and overall.

    With --leave-one-source-out: the cross-source evaluation (README, "Data and the classifier").
    """
    from classifiers.data import DataError, load_examples, load_starter
    from triage.models import LABELS

    labels = [s.strip() for s in (only_labels or "").split(",") if s.strip()]
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        _fail(f"unknown label(s) {', '.join(unknown)} (labels: {', '.join(LABELS)})", 2)
    if loso and one_file:
        _fail(
            "--one-file does not apply to --leave-one-source-out, whose left-out groups are "
            "each one stream (use --adapt-to neighbours to adapt their rows as classify does)",
            2,
        )
    if loso:
        from classifiers.crosseval import leave_one_source_out, render

        try:
            given = load_examples([str(p) for p in data or []])
            tests = load_examples([str(p) for p in test_data or []])
        except DataError as exc:
            _fail(str(exc), 2)
            return
        if starter_only:
            train_data, unseen = load_starter(), given
        else:
            train_data, unseen = given + (load_starter() if with_starter or not data else []), []
        try:
            result = leave_one_source_out(
                train_data,
                unseen,
                test_data=tests,
                only_labels=labels,
                leave_out=leave_out or [],
                config_path=_config_for(arch),
                seed=seed,
                epochs=epochs,
                folds=folds,
                baseline=baseline,
                adapt=adapt,
                adapt_to=adapt_to,
                log=lambda msg: typer.echo(msg, err=True),
            )
        except ValueError as exc:
            _fail(str(exc), 2)
            return
        typer.echo(json.dumps(result, indent=2) if as_json else render(result))
        if record_as:
            from classifiers.evaluate import record

            typer.echo(f"recorded in {record(result, record_as, model)}", err=True)
        return
    if not data:
        _fail("give --data PATH (labelled CSV/JSONL files or folders)", 2)
        return
    from classifiers.evaluate import evaluate_model, render_text

    model = _active_model(model, config, db)
    try:
        result = evaluate_model(
            [str(p) for p in data],
            model,
            baseline=baseline,
            balanced=balanced,
            only_labels=labels,
            report_dir=report_dir,
            adapt=adapt,
            one_file=one_file,
            adapt_to=adapt_to,
        )
    except (DataError, ValueError) as exc:
        _fail(str(exc), 2)
        return
    if not errors:
        result.pop("errors", None)
    typer.echo(json.dumps(result, indent=2) if as_json else render_text(result))
    if record_as:
        from classifiers.evaluate import record

        typer.echo(f"recorded in {record(result, record_as)}", err=True)
