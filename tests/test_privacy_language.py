"""Language detection: accuracy on our mixed-language set, unknown outcomes, no network."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from triage.privacy import UNKNOWN, LanguageDetector, detect_language, detect_languages, language
from triage.privacy.evaluate import load_language_cases, score_language

DATA = Path(__file__).parent / "data" / "privacy"
CASES = load_language_cases(DATA / "language_cases.jsonl")
HOLDOUT = load_language_cases(DATA / "language_holdout.jsonl")
CORE = ("en", "es", "pt", "fr", "de", "it", "nl")


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """This engine does not touch Prefect: no test server for this module (overrides conftest)."""
    yield


def test_set_is_mixed_and_large_enough():
    langs = Counter(lang for _, lang in CASES if lang != UNKNOWN)
    assert sum(langs.values()) >= 300
    assert len(langs) >= 10
    assert all(langs[lang] >= 25 for lang in CORE), langs
    assert {"ru", "ar", "ja", "zh", "ko", "hi", "el"} <= set(langs)


@pytest.mark.parametrize("cases", [CASES, HOLDOUT], ids=["labelled", "holdout"])
def test_accuracy_target(cases):
    report = score_language(cases, LanguageDetector())
    assert report.accuracy >= 0.95, report.errors
    for lang in CORE:
        ok, total = report.per_language[lang]
        assert ok / total >= 0.9, (lang, report.errors)


def test_wrong_answers_are_rare_unknown_is_the_usual_failure():
    # Routing a text to review as "unknown" is safe; a confident wrong language is not.
    report = score_language(CASES, LanguageDetector())
    decided_wrong = [e for e in report.errors if e[1] != UNKNOWN]
    assert len(decided_wrong) <= 2, decided_wrong


def test_short_emoji_and_link_only_texts_are_unknown_with_a_reason():
    assert detect_language("ok").reason == "too_short"
    assert detect_language("😍😍🔥 👍").reason == "too_short"
    assert detect_language("@acme #fail https://t.co/x7Yq2 123").reason == "too_short"
    guess = detect_language("ciao")
    assert guess.language == UNKNOWN and guess.reason == "low_confidence"
    assert 0.0 <= guess.confidence < 0.2
    assert not guess.known


def test_brand_names_and_handles_do_not_make_a_text_english():
    guess = detect_language("@SpotifyCares mi iPhone 15 Pro no reproduce nada con el Bluetooth")
    assert guess.language == "es" and guess.known and guess.reason is None
    assert (
        detect_language("Meine AirPods Pro verbinden sich nicht mehr mit dem MacBook").language
        == "de"
    )


def test_dense_scripts_need_fewer_letters():
    assert detect_language("谢谢你们的帮助").language == "zh"
    assert detect_language("ありがとう").language == "ja"


def test_batch_equals_one_by_one():
    texts = [text for text, _ in CASES[::7]]
    assert detect_languages(texts) == [detect_language(t) for t in texts]


def test_language_restriction():
    detector = LanguageDetector(languages=["en", "de"])
    guess = detector.detect("merci beaucoup pour votre aide, le service était parfait")
    assert guess.language in {"en", "de", UNKNOWN}
    assert detector.detect("die Lieferung kam heute pünktlich an").language == "de"
    with pytest.raises(ValueError, match="unknown language code"):
        LanguageDetector(languages=["en", "xx"])


def test_model_ships_in_the_package_and_loads_without_network(monkeypatch):
    import py3langid

    assert (Path(py3langid.__file__).parent / "data" / "model.npz.xz").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("language detection tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(language, "_MODEL", None)  # force a fresh load under the guard
    language._detector.cache_clear()
    assert (
        detect_language("the parcel arrived broken and nobody answers the phone").language == "en"
    )


def test_threads_asking_at_once_share_one_detector(monkeypatch):
    # The triage flow ingests its sources in parallel threads, and each batch asks for the
    # shared detector: one load of the model, not one per thread.
    built: list[object] = []

    class Slow(LanguageDetector):
        def __init__(self, **kwargs: Any) -> None:
            time.sleep(0.2)  # a model load takes about a second; the others ask meanwhile
            super().__init__(**kwargs)
            built.append(self)

    monkeypatch.setattr(language, "LanguageDetector", Slow)
    language._detector.cache_clear()
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: language.shared_detector(("en", "de")), range(4)))
    finally:
        language._detector.cache_clear()
    assert len(built) == 1
    assert all(d is built[0] for d in got)


def test_released_detectors_load_again_and_held_ones_keep_working():
    # The triage flow lets go of the shared model after ingest, before the classifier loads.
    held = language.shared_detector(("en", "de"))
    language.detect_language("warming up the model shared by every unrestricted detector")
    assert language._detector.cache_info().currsize >= 1 and language._MODEL is not None
    language.release_shared()
    assert language._detector.cache_info().currsize == 0 and language._MODEL is None
    text = "die Lieferung kam kaputt an und niemand geht ans Telefon"
    assert held.detect(text).language == "de"
    again = language.shared_detector(("en", "de"))
    assert again is not held and again.detect(text) == held.detect(text)


def _py3langid_answer(identifier: Any, detector: LanguageDetector, text: str) -> Any:
    """What py3langid's own per-text ``classify`` says, or None when the detector never asks."""
    if detector.detect(text).reason == "too_short":
        return None
    lang, confidence = identifier.classify(language.clean_for_detection(text))
    return str(lang), float(confidence)


@pytest.mark.parametrize("languages", [None, ("en", "es", "de", "fr", "ru", "ja")])
def test_batch_walk_gives_py3langid_answers(languages):
    # The batched automaton must be py3langid's classifier, only faster: the same language for
    # every text, the same probability up to float rounding. Texts of every length and script,
    # several of them longer than a chunk, in one batch (so chunks and the per-text tail mix).
    starter = Path(__file__).parents[1] / "classifiers" / "corpus" / "starter"
    texts = [json.loads(line)["text"] for line in (starter / "kudos.jsonl").open()][:400]
    texts += [text for text, _ in CASES + HOLDOUT]
    texts += ["x" * 40_000, "Ünïcödé " * 3_000, "", "   ", "ALL CAPS ARE LOWERED FIRST"]
    texts += ["la commande est arrivée cassée " * 200, "短い"]
    detector = LanguageDetector(languages=languages)
    identifier = language._identifier(languages)
    guesses = detector.detect_many(texts)
    compared = 0
    for text, guess in zip(texts, guesses, strict=True):
        expected = _py3langid_answer(identifier, detector, text)
        if expected is None:
            assert guess.reason == "too_short"
            continue
        compared += 1
        lang, confidence = expected
        assert guess.confidence == pytest.approx(confidence, abs=1e-4), text[:60]
        if lang == "zxx":
            assert guess.reason == "no_language"
        elif confidence >= detector.min_confidence + 1e-4:
            assert guess.language == lang, text[:60]
    assert compared >= 700


def test_featureless_text_is_uniform_as_in_py3langid():
    # Bytes the automaton finds no n-gram in give py3langid all-zero scores (a uniform answer);
    # the batch must not add the class prior to them.
    # Beside a text that has features, so the two share a chunk.
    [[lang, confidence], _] = language._model().classify(
        ["\x00\x01\x02\x03\x04", "the parcel arrived broken"]
    )
    expected = language._identifier().classify("\x00\x01\x02\x03\x04")
    assert lang == expected[0] and confidence == pytest.approx(expected[1], abs=1e-6)
