"""Behaviour of the shipped classifier and of the classify / train / evaluate commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from typer.testing import CliRunner

from classifiers.corpus_stats import near_duplicates
from classifiers.data import STARTER_DIR, load_examples
from classifiers.model import Classifier
from classifiers.normalize import normalize
from tests.decision_oracle import reason_matches, reference_decision
from triage.cli import app
from triage.models import LABELS, primary_label

from .conftest import SHARED_DATASETS


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.load()


def label_of(clf: Classifier, text: str) -> str:
    return clf.predict([text])[0].label


# ------------------------------------------------------------------- behaviour
@pytest.mark.parametrize(
    ("base", "variants", "expected"),
    [
        (
            "my flight got cancelled and nobody at the gate can tell me anything",
            ["@skyjet {}", "@brightbank_help {} https://t.co/zz99", "{} #fail"],
            "service_issue",
        ),
        (
            "how much is the business plan for 12 seats?",
            ["@acme_io {}", "{} https://acme.example/pricing", "@a @b {}"],
            "sales_lead",
        ),
        ("wish it had dark mode", ["@nimbus {}", "{} https://x.example/1"], "feature_request"),
    ],
)
def test_labels_survive_changed_handles_and_urls(
    clf: Classifier, base: str, variants: list[str], expected: str
) -> None:
    assert label_of(clf, base) == expected
    for template in variants:
        assert label_of(clf, template.format(base)) == expected, template


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not bad at all, honestly the best support chat I've used", "kudos"),
        ("I don't hate the new update, it's actually really smooth", "kudos"),
        ("no complaints, the refund came through in two days. thank you!", "kudos"),
        ("it's not that I don't like it, I just wish it had dark mode", "feature_request"),
        ("oh wonderful, charged twice again. thanks a lot", "service_issue"),
        ("great, another outage. love paying for this", "service_issue"),
    ],
)
def test_negation_and_sarcasm(clf: Classifier, text: str, expected: str) -> None:
    assert label_of(clf, text) == expected


@pytest.mark.parametrize(
    ("text", "primary", "secondary"),
    [
        ("love the app but it crashes every time I log in", "service_issue", "kudos"),
        (
            "pricing for 50 seats? also would love a jira integration",
            "sales_lead",
            "feature_request",
        ),
        ("love this app, would be perfect with an apple watch version", "feature_request", "kudos"),
    ],
)
def test_mixed_intents_give_primary_and_secondary(
    clf: Classifier, text: str, primary: str, secondary: str
) -> None:
    pred = clf.predict([text])[0]
    assert pred.label == primary
    assert pred.labels[0] == primary and secondary in pred.labels


@pytest.mark.parametrize(
    "text",
    [
        "BEST CHEAP iphone case samsung galaxy pixel charger deals at cheapcases dot biz!!! free shipping",
        "check out my channel for iphone reviews and samsung unboxings, subscribe!!",
        "earn $500/day from home with crypto, no experience, dm me, works with any bank app",
    ],
)
def test_spam_stuffed_with_product_words_is_other(clf: Classifier, text: str) -> None:
    assert label_of(clf, text) == "other"


def test_scores_cover_every_label_and_are_probabilities(clf: Classifier) -> None:
    texts = [
        "the app is great",
        "love the app but it crashes every time I log in",
        "pricing for 50 seats? also would love a jira integration",
        "what a game last night",
    ]
    for pred in clf.predict(texts):
        assert set(pred.scores) == set(LABELS)
        assert all(0.0 <= v <= 1.0 for v in pred.scores.values())
        # The decision is DESIGN.md's rule applied to these scores under the model's own policy
        # (not "the top score", which is only one of the two rules).
        want = reference_decision(pred.scores, clf.policy)
        assert (pred.label, tuple(pred.labels[1:])) == (want.primary, want.secondary)
        assert pred.needs_review is want.needs_review
        assert reason_matches(want.reason, pred.review_reason)


def test_normalisation_keeps_meaning_but_not_noise() -> None:
    assert (
        normalize("@SkyJet soooo late!!! https://t.co/x #fail") == "@user soo late!!! urllink fail"
    )
    assert normalize("mail me at jo@example.com") == "mail me at emailaddr"


def test_stem_tokens_join_word_forms_and_leave_word_bigrams_intact() -> None:
    from classifiers.tokenizer import FastTokenizer

    vocab = spacy.blank("en").vocab
    plain = [t.text for t in FastTokenizer(vocab)("Flight CANCELLED, again!")]
    stems = FastTokenizer(vocab, stem_length=5, stem_min_length=6)
    words = [t.text for t in stems("Flight CANCELLED, again!")]
    # The words come first and unchanged (so their bigrams are the v1 ones), stems after.
    assert plain == ["flight", "cancelled", ",", "again", "!"]
    assert words == [*plain, "fligh~", "cance~"]
    # Other forms of a word share its stem token; words under six characters get none.
    other_forms = [t.text for t in stems("they cancel my cancellation")]
    assert other_forms == ["they", "cancel", "my", "cancellation", "cance~", "cance~"]


def test_batched_ngram_extraction_matches_spacys_per_document_one(clf: Classifier) -> None:
    from spacy.ml.extract_ngrams import forward as spacy_forward

    from classifiers.bow import batch_ngrams

    node = next(
        n for n in clf.nlp.get_pipe("textcat_multilabel").model.walk() if n.name == "extract_ngrams"
    )
    texts = [
        "love it",
        "the app crashes every time I open the camera, again and again and again",
        "x",
        "how much for 12 seats? how much for 12 seats?",
        "😍😍😍 @skyjet https://t.co/abc #fail",
    ]
    docs = [clf.nlp.make_doc(t) for t in texts * 3]
    expected = spacy_forward(node, docs, False)[0]
    got = batch_ngrams(node, docs, False)[0]
    for want, have in zip(expected, got, strict=True):
        assert want.dtype == have.dtype
        assert want.tolist() == have.tolist()
    # An empty document (spaCy's extractor fails on it) just has no n-grams.
    keys, counts, lengths = batch_ngrams(node, [clf.nlp.make_doc(""), docs[0]], False)[0]
    assert counts.tolist() == expected[1][: int(expected[2][0])].tolist()
    first = int(expected[2][0])
    assert lengths.tolist() == [0, first]
    assert keys.tolist() == expected[0][:first].tolist()


# --------------------------------------------------------------------- corpus
def test_starter_corpus_is_large_balanced_and_consistent() -> None:
    examples = load_examples([STARTER_DIR])
    counts = {lab: sum(ex.label == lab for ex in examples) for lab in LABELS}
    assert all(n >= 600 for n in counts.values()), counts
    assert all(primary_label(ex.labels) == ex.label for ex in examples)
    rows = [
        json.loads(line) for p in STARTER_DIR.glob("*.jsonl") for line in p.open(encoding="utf-8")
    ]
    assert all({"text", "label", "labels", "source_type", "note"} <= set(r) for r in rows)
    assert len({r["source_type"] for r in rows}) >= 10


def test_near_duplicate_detector_flags_rewordings_not_different_texts() -> None:
    texts = [
        "the app crashes every time I open the camera on my pixel",
        "the app crashes every time I open the camera on my pixel!!",
        "how much does the team plan cost per seat",
    ]
    pairs = near_duplicates(texts, 0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]


# ---------------------------------------------------------------- classify CLI
def test_classify_cli_keeps_order_and_reports_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": 1, "text": "charged twice this month"}).encode(),
        b"",  # blank lines are not rows
        json.dumps({"id": 2, "text": ""}).encode(),
        b"\xff\xfe not utf-8 \x80",
        b"{not json",
        json.dumps(
            {"id": 3, "text": "the app crashes every time I log in " + "x" * 1_000_000}
        ).encode(),
        json.dumps({"id": 4, "text": "do you ship to Canada?"}).encode(),
        json.dumps({"id": 5, "nope": "no text"}).encode(),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"

    result = CliRunner().invoke(app, ["classify", "--input", str(src), "--output", str(out)])

    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert rows[0]["label"] == "service_issue" and rows[0]["id"] == 1
    assert rows[1]["error"] == "text is empty"
    assert "UTF-8" in rows[2]["error"]
    assert "invalid JSON" in rows[3]["error"]
    # A 1 MB text is classified, on its beginning.
    assert rows[4]["label"] == "service_issue" and set(rows[4]["scores"]) == set(LABELS)
    assert rows[5]["label"] == "sales_lead" and rows[5]["id"] == 4
    assert "text" in rows[6]["error"]
    for r in rows:
        assert {"label", "labels", "scores", "needs_review"} <= set(r)


def test_classify_cli_csv_binary_and_empty_files(tmp_path: Path) -> None:
    csv_in = tmp_path / "in.csv"
    csv_in.write_bytes(
        b'id,text\n1,"wish it had dark mode"\n2,"bin\x00ary"\n3,"caf\xe9 latin-1"\n4,"what a game last night"\n'
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", "-i", str(csv_in), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["label"] == "feature_request"
    assert "binary" in rows[1]["error"]
    assert "UTF-8" in rows[2]["error"]
    assert rows[3]["label"] == "other"

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["classify", "-i", str(empty), "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text(encoding="utf-8") == ""

    no_text = tmp_path / "bad.csv"
    no_text.write_text("id,body\n1,hello\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["classify", "-i", str(no_text), "-o", str(out)])
    assert result.exit_code == 2
    assert "text" in result.output


# ------------------------------------------------------------- train/evaluate
@pytest.mark.slow
def test_train_is_seeded_and_reproducible_and_evaluate_reports(tmp_path: Path) -> None:
    data = tmp_path / "small.jsonl"
    examples = load_examples([STARTER_DIR])
    with data.open("w", encoding="utf-8") as fh:
        for ex in examples[::8]:
            fh.write(json.dumps({"text": ex.text, "label": ex.label}) + "\n")
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(
            app, ["train", "--data", str(data), "--out", str(tmp_path / name), "--epochs", "3"]
        )
        assert result.exit_code == 0, result.output
        assert "epoch  3/3" in result.output
    a = (tmp_path / "a" / "textcat_multilabel" / "model").read_bytes()
    b = (tmp_path / "b" / "textcat_multilabel" / "model").read_bytes()
    assert a == b
    meta = json.loads((tmp_path / "a" / "triage_meta.json").read_text())
    assert set(meta["policy"]["thresholds"]) == set(LABELS)
    assert (tmp_path / "a" / "MODEL_CARD.md").read_text().startswith("# Model card")

    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(data),
            "--model",
            str(tmp_path / "a"),
            "--json",
            "--report-dir",
            str(tmp_path / "rep"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # The report's figures, recomputed here from the model's own predictions with scikit-learn.
    from sklearn.metrics import accuracy_score, f1_score

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    gold = [r["label"] for r in rows]
    preds = Classifier.load(tmp_path / "a").predict([r["text"] for r in rows])
    labels = [p.label for p in preds]
    want_f1 = f1_score(gold, labels, labels=sorted(set(gold)), average="macro", zero_division=0)
    assert report["overall"]["macro_f1"] == pytest.approx(want_f1, abs=1e-4)
    assert report["overall"]["accuracy"] == pytest.approx(accuracy_score(gold, labels), abs=1e-4)
    assert report["overall"]["macro_f1"] > 0.7  # scored on its own training rows
    assert set(report["overall"]["per_label"]) == set(LABELS)
    assert "baseline" in report and report["baseline"]["macro_f1"] > 0.5
    assert (tmp_path / "rep" / "confusion_matrix.png").stat().st_size > 1000


@pytest.mark.dataset
def test_shipped_model_generalises_to_real_feedback() -> None:
    """Targets of the classifier issue, on the shared dev split (skipped without ../shared)."""
    if not (SHARED_DATASETS / "dev").exists():
        pytest.skip(f"{SHARED_DATASETS / 'dev'} not present (datasets are optional)")
    from classifiers.evaluate import evaluate_model

    result = evaluate_model(
        [str(SHARED_DATASETS / "dev")], None, baseline=False, balanced=150, report_dir=None
    )
    assert result["overall"]["macro_f1"] >= 0.75


def test_shipped_model_labels_the_demo_feeds_as_intended(clf: Classifier) -> None:
    """The demo feeds were written apart from the starter corpus; their answer key is a check."""
    import csv

    demo = Path(__file__).resolve().parents[1] / "triage" / "demo"
    expected = {r["id"]: r["label"] for r in csv.DictReader((demo / "expected_labels.csv").open())}
    texts: dict[str, str] = {}
    for name in ("social-mentions.jsonl", "app-reviews.jsonl"):
        for line in (demo / "drops" / name).open(encoding="utf-8"):
            row = json.loads(line)
            texts[row["id"]] = row["text"]
    for row in csv.DictReader((demo / "drops" / "web-form.csv").open(encoding="utf-8")):
        texts[row["id"]] = row["text"]
    ids = [i for i in texts if i in expected]
    preds = clf.predict([texts[i] for i in ids])
    hits = sum(p.label == expected[i] for i, p in zip(ids, preds, strict=True))
    assert len(ids) >= 170
    assert hits / len(ids) >= 0.85, f"{hits}/{len(ids)}"
