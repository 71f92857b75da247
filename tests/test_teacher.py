"""Teacher-labelled rows: how they are made, loaded, and kept out of the folds they would leak into."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifiers.data import (
    DataError,
    Example,
    load_examples,
    load_starter,
    load_teacher_rows,
    source_family,
    teacher_rows_without,
)
from classifiers.fitting import (
    CONFIG_DIR,
    DocCache,
    build_pipeline,
    cross_source_scores,
    fit_pipeline,
    gold_cats,
    teacher_rows_for_fold,
)
from classifiers.teacher import file_name, recombine, screen, teacher_labels
from triage.models import LABELS


def _probs(**given: float) -> list[float]:
    return [given.get(label, 0.0) for label in LABELS]


def test_teacher_labels_follow_the_priority_rule_and_drop_other() -> None:
    # Praise scored highest, a problem also applies: the problem's owner acts first.
    assert teacher_labels(_probs(kudos=0.55, service_issue=0.35, other=0.1)) == (
        "service_issue",
        ["service_issue", "kudos"],
    )
    # "other" beside a real label is noise, not a second owner.
    assert teacher_labels(_probs(other=0.6, kudos=0.35)) == ("kudos", ["kudos"])
    assert teacher_labels(_probs(other=0.9, kudos=0.05)) == ("other", ["other"])
    # A sigmoid per label (--multi-label) adds a label from "more likely than not" on.
    assert teacher_labels(_probs(kudos=0.9, service_issue=0.45), also=0.5) == ("kudos", ["kudos"])
    assert teacher_labels(_probs(kudos=0.9, service_issue=0.55), also=0.5) == (
        "service_issue",
        ["service_issue", "kudos"],
    )
    # A joined pair keeps its parts' labels even where the softmax picked one intent.
    assert teacher_labels(_probs(kudos=0.9, service_issue=0.1), ["kudos", "service_issue"]) == (
        "service_issue",
        ["service_issue", "kudos"],
    )
    assert teacher_labels(_probs(other=0.8, sales_lead=0.2), ["other", "sales_lead"]) == (
        "sales_lead",
        ["sales_lead"],
    )
    # Below the bar a second label does not apply.
    assert teacher_labels(_probs(feature_request=0.7, sales_lead=0.29)) == (
        "feature_request",
        ["feature_request"],
    )


def test_recombined_texts_come_only_from_the_pool_and_are_seeded() -> None:
    pool = [
        Example(
            text=f"first sentence number {i} here. second sentence number {i} here",
            label="kudos",
            labels=["kudos"],
            group="tweet",
        )
        for i in range(40)
    ]
    made = recombine(pool, 0.1, seed=3)
    assert made == recombine(pool, 0.1, seed=3)
    assert made != recombine(pool, 0.1, seed=4)
    words = {w for ex in pool for w in ex.text.split()}
    assert all(set(text.split()) <= words for text, _, _ in made)
    assert {group for _, group, _ in made} == {"tweet"}
    # A joined pair carries both parts' labels; a sentence or a shortened text none.
    assert sum(known == ["kudos", "kudos"] for _, _, known in made) == 300
    assert sum(known == [] for _, _, known in made) == 340
    # 300 joined pairs and 300 with words dropped at share 0.1, plus one sentence of every text.
    assert len(made) == 300 + 40 + 300


def test_teacher_files_are_named_after_the_family_left_out() -> None:
    assert file_name("starter:app-reviews") == "without-app-reviews.jsonl"
    assert file_name("") == "all-families.jsonl"


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_teacher_rows_load_by_teacher_and_count_as_starter_text(tmp_path: Path) -> None:
    _write(
        tmp_path / "all-families.jsonl",
        [{"text": "love it", "label": "kudos", "source_type": "tweet", "teacher_without": ""}],
    )
    _write(
        tmp_path / "without-direct.jsonl",
        [
            {
                "text": "app crashes",
                "label": "service_issue",
                "source_type": "app_review",
                "teacher_without": "starter:direct",
            },
            {
                "text": "dark mode pls",
                "label": "feature_request",
                "source_type": "tweet",
                "teacher_without": "starter:direct",
            },
        ],
    )
    rows = load_teacher_rows(tmp_path)
    assert sorted(rows) == ["", "starter:direct"]
    assert [ex.text for ex in rows["starter:direct"]] == ["app crashes", "dark mode pls"]
    # Their origin puts them with the starter corpus (its weight and its balancing group).
    assert rows[""][0].origin == "starter/distilled/all-families.jsonl"
    assert source_family(rows["starter:direct"][0]) == "starter:app-reviews"
    assert load_teacher_rows(tmp_path / "missing") == {}

    _write(
        tmp_path / "mixed.jsonl",
        [
            {"text": "a", "label": "other", "teacher_without": ""},
            {"text": "b", "label": "other", "teacher_without": "starter:direct"},
        ],
    )
    with pytest.raises(DataError, match="more than one teacher"):
        load_teacher_rows(tmp_path)


def test_screen_drops_recombined_rows_that_copy_other_data(tmp_path: Path) -> None:
    built = tmp_path / "all-families.jsonl"
    rows = [
        {"text": "do i get a price for a blue widget today", "label": "sales_lead"},
        {
            "text": "the blue widget arrived broken and support is not answering",
            "label": "service_issue",
        },
    ]
    _write(built, [{**r, "teacher_without": ""} for r in rows])
    other = tmp_path / "other.csv"
    other.write_text(
        "text,label\nHow do I get a price for a blue widget today,sales_lead\n", "utf-8"
    )

    others = [ex.text for ex in load_examples([other])]
    assert screen(built, others, log=lambda _: None) == 1
    assert [ex.text for ex in load_teacher_rows(tmp_path)[""]] == [rows[1]["text"]]
    assert screen(built, others, log=lambda _: None) == 0


def test_soft_targets_blend_the_teachers_probabilities_into_the_gold_cats(tmp_path: Path) -> None:
    probs = {"kudos": 0.2, "service_issue": 0.7, "other": 0.1}
    _write(
        tmp_path / "all-families.jsonl",
        [
            {
                "text": "love it but it crashes",
                "label": "service_issue",
                "labels": ["service_issue", "kudos"],
                "teacher_without": "",
                "teacher_probs": probs,
            },
            {"text": "no probabilities", "label": "other", "teacher_without": ""},
        ],
    )
    rows = load_teacher_rows(tmp_path)
    soft, hard = rows[""]
    assert soft.teacher_probs == probs
    assert hard.teacher_probs is None
    blended = gold_cats(soft, 0.5)
    assert blended == pytest.approx(
        {
            "kudos": 0.6,
            "service_issue": 0.85,
            "other": 0.05,
            "sales_lead": 0.0,
            "feature_request": 0.0,
        }
    )
    # A row without the teacher's probabilities keeps its 0/1 targets.
    assert gold_cats(hard, 0.5) == {lab: float(lab == "other") for lab in LABELS}
    # The training docs carry the blended targets as their gold cats; weight 0 leaves 0/1.
    nlp, _ = build_pipeline(CONFIG_DIR / "textcat_bow.cfg")
    cache = DocCache()
    (gold_soft, gold_hard) = cache.examples(nlp, [soft, hard], 0.5)
    assert gold_soft.reference.cats == blended
    assert gold_hard.reference.cats == {lab: float(lab == "other") for lab in LABELS}
    (gold_zero,) = cache.examples(nlp, [soft], 0.0)
    assert gold_zero.reference.cats == {lab: float(lab in soft.labels) for lab in LABELS}


def test_a_model_trained_on_soft_targets_learns_how_sure_the_teacher_was(tmp_path: Path) -> None:
    """Real training: a cue the teacher was sure of half the time scores lower than a sure one."""
    base = (CONFIG_DIR / "textcat_bow.cfg").read_text(encoding="utf-8")
    # A faster learning rate, so that a few epochs get near what the targets ask for.
    base = base.replace("mixed_examples = 600", "mixed_examples = 0")
    base = base.replace("learn_rate = 0.002", "learn_rate = 0.02")
    starter = load_starter()
    plain = [ex for ex in starter if ex.label == "other"][:150]
    plain += [ex for ex in starter if ex.label == "kudos"][:150]
    # Each filler carries the cue twice: once where the teacher was sure it means a lead and once
    # where it gave a lead 0.2, so only the targets tell the two rows apart.
    fillers = [" ".join(ex.text.split()[:3]) for ex in plain[:60]]
    cue_rows = [
        Example(
            text=f"zorblat {filler}",
            label="sales_lead",
            labels=["sales_lead"],
            origin="starter/distilled/all-families.jsonl",
            group="tweet",
            teacher_probs={"sales_lead": sure, "other": 1 - sure},
        )
        for filler in fillers
        for sure in (1.0, 0.2)
    ]

    def lead_score(weight: float) -> float:
        config = tmp_path / f"soft-{weight}.cfg"
        config.write_text(base + f"teacher_soft = {weight}\n", encoding="utf-8")
        _, scores = fit_pipeline(config, plain + cue_rows, 15, 13, ["zorblat"])
        return float(scores[-1][0, LABELS.index("sales_lead")])

    hard = lead_score(0.0)
    soft = lead_score(1.0)
    # 0/1 targets say the cue is a lead every time; the teacher's say so 60% of the time.
    assert hard > 0.75, hard
    assert soft < hard - 0.15, (soft, hard)
    assert soft > 0.3, soft


def _row(text: str, label: str, group: str) -> Example:
    return Example(text=text, label=label, labels=[label], origin="starter/x.jsonl", group=group)


def test_leaving_a_family_out_keeps_every_teacher_that_saw_it_away_from_the_final_model() -> None:
    rows = {
        "": [_row("all", "kudos", "tweet")],
        "starter:direct": [_row("d1", "kudos", "tweet"), _row("d2", "kudos", "app_review")],
        "starter:app-reviews": [_row("a1", "kudos", "tweet"), _row("a2", "kudos", "email")],
    }
    out = teacher_rows_without(rows, "starter:direct")
    # The teacher that never saw the family trains the model that scores it.
    assert [ex.text for ex in out[""]] == ["d1", "d2"]
    assert "starter:direct" not in out
    # Other held-out teachers keep only rows made from other families' texts.
    assert [ex.text for ex in out["starter:app-reviews"]] == ["a1"]
    # A family no teacher left out (a shared file) was never seen by any of them.
    assert teacher_rows_without(rows, "airline.csv") is rows


def test_each_fold_takes_the_rows_of_a_teacher_that_never_saw_what_it_scores() -> None:
    rows = {
        "": [_row("all", "kudos", "tweet")],
        "A": [_row("a", "kudos", "tweet")],
        "B": [_row("b", "kudos", "tweet")],
    }
    assert [ex.text for ex in teacher_rows_for_fold(["A"], rows)] == ["a"]
    assert [ex.text for ex in teacher_rows_for_fold(["A", "shared.csv"], rows)] == ["a"]
    assert [ex.text for ex in teacher_rows_for_fold(["shared.csv"], rows)] == ["all"]
    assert teacher_rows_for_fold(["A", "B"], rows) == []
    assert teacher_rows_for_fold(["A"], {}) == []


@pytest.mark.slow
def test_a_fold_learns_from_its_own_teacher_only() -> None:
    """Train real folds: a cue word only fold A's teacher taught shows in A's scores alone."""
    starter = load_starter()
    by_label: dict[str, list[Example]] = {label: [] for label in LABELS}
    for ex in starter:
        by_label[ex.label].append(ex)
    examples = []
    for k, group in enumerate(("A.jsonl", "B.jsonl")):
        for label in LABELS:
            for ex in by_label[label][k * 40 : k * 40 + 40]:
                examples.append(
                    Example(text=ex.text, label=label, labels=[label], origin=group, group=group)
                )
    fillers = [" ".join(ex.text.split()[:3]) for ex in by_label["other"][400:600]]
    # Fold A's teacher says "flurbo" means a sales lead, fold B's that "gleep" means one.
    rows = {
        "A.jsonl": [_row(f"flurbo {t}", "sales_lead", "tweet") for t in fillers],
        "B.jsonl": [_row(f"gleep {t}", "sales_lead", "tweet") for t in fillers],
    }
    # The same left-out texts twice: with fold A's cue and with fold B's.
    probes = [ex.text for ex in by_label["other"][300:330]]
    first = len(examples)
    for cue in ("flurbo", "gleep"):
        examples += [
            Example(
                text=f"{cue} {t}",
                label="other",
                labels=["other"],
                origin="A.jsonl",
                group="A.jsonl",
            )
            for t in probes
        ]
    scores, fold, _ = cross_source_scores(
        CONFIG_DIR / "textcat_bow.cfg", examples, 2, 4, 13, teacher_rows=rows
    )
    lead = LABELS.index("sales_lead")
    taught = scores[-1, first : first + len(probes), lead]
    untaught = scores[-1, first + len(probes) :, lead]
    assert len(set(fold[first:].tolist())) == 1
    # Fold A trained on its teacher's rows and not on B's: only its cue raises the score.
    assert np.mean(taught - untaught) > 0.1, (
        np.mean(taught),
        np.mean(untaught),
        np.mean(taught > untaught),
    )
    assert np.mean(taught > untaught) > 0.9


@pytest.mark.slow
def test_a_model_that_leaves_a_family_out_learns_only_from_the_teacher_that_never_saw_it() -> None:
    """Leave-one-source-out: the final model trains on the rows of the teacher without ``C``."""
    from classifiers.model import Classifier
    from classifiers.train import fit_classifier

    starter = load_starter()
    examples = [
        Example(text=ex.text, label=ex.label, labels=[ex.label], origin=g, group=g)
        for k, g in enumerate(("A.jsonl", "B.jsonl"))
        for ex in starter[k::40]
    ]
    fillers = [" ".join(ex.text.split()[:3]) for ex in starter[7::60] if ex.label == "other"]
    rows = {
        "": [_row(f"zorp {t}", "sales_lead", "tweet") for t in fillers],
        "C.jsonl": [_row(f"flurbo {t}", "sales_lead", "tweet") for t in fillers],
    }
    nlp, policy, fit = fit_classifier(
        examples,
        config_path=CONFIG_DIR / "textcat_bow.cfg",
        epochs=3,
        folds=2,
        log=lambda _: None,
        rich=False,
        teacher_rows=rows,
        left_out="C.jsonl",
    )
    assert fit["teacher_rows"] == {"(all families)": len(fillers)}
    clf = Classifier(nlp, {"policy": policy.to_json()}, Path("."))
    probes = [ex.text for ex in starter[3::200] if ex.label == "other"]
    lead = LABELS.index("sales_lead")
    taught = clf.raw_scores([f"flurbo {t}" for t in probes])[:, lead]
    untaught = clf.raw_scores([f"zorp {t}" for t in probes])[:, lead]
    assert np.mean(taught - untaught) > 0.1, (np.mean(taught), np.mean(untaught))
