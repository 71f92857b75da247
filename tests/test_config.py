"""The configuration is checked once, at load: every problem is one line naming the file, line and key.

The malformed cases are the ones users hit (issue 13, item 6) plus misspelt keys; a property-based
part mutates the demo configuration and feeds arbitrary YAML and bytes to the loader: every input is
either a valid configuration or a ConfigError, and the command line exits 2 with the message.
"""

from __future__ import annotations

import copy
import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from connectors import CONNECTORS
from flows.settings import load_config
from triage.cli import app
from triage.cli.config import SCHEMA_FILE, schema_text
from triage.config import ConfigError
from triage.config.models import DESTINATION_MODELS
from triage.destinations import DESTINATION_TYPES

DEMO = Path(__file__).resolve().parents[1] / "triage" / "demo" / "triage.yaml"
DEMO_DATA: dict[str, Any] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))


def _write(tmp_path: Path, text: str | bytes, name: str = "triage.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    return str(info.value)


# Each case: the YAML, then (line, key path, words of the message) that the error must contain.
CASES: dict[str, tuple[str, int, str, str]] = {
    "min_score: abc": (
        "routing:\n  rules:\n    - {label: kudos, min_score: abc, department: marketing}\n",
        3,
        "routing.rules[0].min_score",
        "valid number",
    ),
    "thresholds: {kudos: high}": (
        "classification:\n  thresholds: {kudos: high}\n",
        2,
        "classification.thresholds.kudos",
        "valid number",
    ),
    "max_attempts: many": (
        "delivery:\n  max_attempts: many\n",
        2,
        "delivery.max_attempts",
        "valid integer",
    ),
    "department as a string": (
        "departments:\n  sales: {destination: null}\n  support: zendesk\n",
        3,
        "departments.support",
        "expected a mapping",
    ),
    "rules: [support]": ("routing:\n  rules: [support]\n", 2, "routing.rules[0]", "mapping"),
    "unknown source type": (
        "sources:\n  - name: a\n    type: redit\n",
        3,
        "sources[0].type",
        "unknown source type (did you mean 'reddit'?",
    ),
    "unknown destination type": (
        "destinations:\n  x: {type: slak, channel: C1}\n",
        2,
        "destinations.x.type",
        "unknown destination type",
    ),
    "file source without path": (
        "sources:\n  - {name: a, type: rss, url: feed.xml}\n  - {name: b, type: file}\n",
        3,
        "sources[1].path",
        "required",
    ),
    "rss source without url": (
        "sources:\n  - {name: a, type: rss}\n",
        2,
        "sources[0].url",
        "required",
    ),
    "webhook source without spool_dir": (
        "sources:\n  - {name: a, type: webhook}\n",
        2,
        "sources[0].spool_dir",
        "required",
    ),
    "adapt_to: rows": (
        "classification:\n  adapt_to: rows\n",
        2,
        "classification.adapt_to",
        "'source' or 'neighbours'",
    ),
    "bad resurface_after": (
        "review:\n  resurface_after: tomorrow\n",
        2,
        "review.resurface_after",
        "duration",
    ),
    "sourcs:": ("sourcs: []\n", 1, "sourcs", "did you mean 'sources'"),
    "patern:": (
        "sources:\n  - name: a\n    type: file\n    path: drops\n    patern: '*.csv'\n",
        5,
        "sources[0].patern",
        "unknown setting 'patern' of source 'a' (did you mean 'pattern'?)",
    ),
    "feilds:": (
        "sources:\n  - {name: a, type: file, path: x, feilds: {id: ID}}\n",
        2,
        "sources[0].feilds",
        "unknown setting 'feilds' of source 'a' (did you mean 'fields'?)",
    ),
    "unknown destination key": (
        "destinations:\n  s: {type: slack, channel: C1, chanel: C2}\n",
        2,
        "destinations.s.chanel",
        "unknown key",
    ),
    "alerts to an undefined destination": (
        "alerts: {destination: pager}\n",
        1,
        "alerts.destination",
        "'pager' is not a configured destination",
    ),
    "auto_handoff: {kudos: high}": (
        "routing:\n  auto_handoff: {kudos: high}\n",
        2,
        "routing.auto_handoff.kudos",
        "boolean",
    ),
    "a key given twice": ("database: a.duckdb\ndatabase: b.duckdb\n", 2, "database", "twice"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_malformed_configuration_names_its_line_and_key(tmp_path: Path, case: str) -> None:
    text, line, key, words = CASES[case]

    message = _error(tmp_path, text)

    assert message.startswith(f"{tmp_path / 'triage.yaml'}:{line}: "), message
    assert key in message and words in message, message
    assert "Traceback" not in message and "pydantic" not in message


def test_a_directory_or_a_non_utf8_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path / "conf.d")
    assert "not UTF-8" in _error(tmp_path, "sources: []\n# caf\xe9\n".encode("latin-1"))
    assert "not valid YAML" in _error(tmp_path, "sources: [\n")
    assert "top level must be a mapping" in _error(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        "sourcs: []\ndelivery: {max_attempts: many}\nreview: {resurface_after: soon}\n",
    )

    lines = message.splitlines()
    assert len(lines) == 3
    assert [line.split(": ")[1] for line in lines] == [
        "sourcs",
        "delivery.max_attempts",
        "review.resurface_after",
    ]


def test_the_demo_and_the_readme_examples_are_valid(tmp_path: Path) -> None:
    cfg = load_config(DEMO)
    assert [s.name for s in cfg.sources][:2] == ["social", "app-reviews"]
    assert cfg.review.resurface_after.total_seconds() == 24 * 3600
    assert cfg.review.batch_threshold is None  # README: unset means never thread
    # Every ```yaml block of the README that is a whole configuration or a list of sources.
    readme = (DEMO.parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, list):  # a source entry
            data = {"sources": data}
        if not isinstance(data, dict):
            continue
        data.setdefault("sources", [])
        for dest in ("zendesk", "hubspot", "github", "testimonials", "alerts-channel"):
            data.setdefault("destinations", {}).setdefault(dest, {"type": "preview"})
        data["destinations"].setdefault("sales-channel", {"type": "preview"})
        load_config(_write(tmp_path, json.dumps(data), f"readme{checked}.yaml"))
        checked += 1
    assert checked >= 10


def test_connector_settings_come_from_the_connectors_own_description(tmp_path: Path) -> None:
    # Every described setting is accepted, and nothing else: the description is the list.
    for kind, module in CONNECTORS.items():
        settings = {key: "x" for key in module.SETTINGS}
        entry = {"name": "s", "type": kind, **settings}
        try:  # a connector may refuse the value "x" (its own `validate`), never the key
            cfg = load_config(_write(tmp_path, json.dumps({"sources": [entry]}), f"{kind}.yaml"))
            assert cfg.sources[0].settings == settings
        except ConfigError as exc:
            assert "unknown setting" not in str(exc) and "source 's'" in str(exc), str(exc)
        entry["not_a_setting"] = 1
        with pytest.raises(
            ConfigError,
            match=r"sources\[0\]\.not_a_setting: unknown setting 'not_a_setting' of source 's'",
        ):
            load_config(_write(tmp_path, json.dumps({"sources": [entry]}), f"{kind}.yaml"))


def test_every_destination_type_the_outbox_knows_is_validated() -> None:

    assert set(DESTINATION_MODELS) == set(DESTINATION_TYPES)


def test_the_committed_json_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "run `triage config schema --out triage/config.schema.json`"
    )
    schema = json.loads(schema_text())
    assert schema["additionalProperties"] is False
    assert "sources" in schema["properties"] and "alerts" in schema["properties"]


def test_config_check_and_schema_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", "--config", str(DEMO)])
    assert ok.exit_code == 0 and "OK (7 sources" in ok.output
    assert "warning" not in ok.output
    # Valid but empty: a run would do nothing, which the check now says instead of a bare OK.
    for text in ("", "sources: []\n"):
        empty = runner.invoke(app, ["config", "check", "--config", str(_write(tmp_path, text))])
        assert empty.exit_code == 0 and "OK (0 sources, 0 enabled; 0 destinations" in empty.output
        assert "warning: no source is enabled: `triage run` fetches nothing" in empty.output
        assert "warning: no destination is configured: nothing is delivered" in empty.output
    bad = runner.invoke(app, ["config", "check", "--config", str(_write(tmp_path, "sourcs: []\n"))])
    assert bad.exit_code == 2
    assert "sourcs: unknown key (did you mean 'sources'?)" in bad.output
    out = tmp_path / "schema.json"
    assert runner.invoke(app, ["config", "schema", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["title"] == "feedback-triage configuration"


# ------------------------------------------------------------------ property-based: never a crash
_KNOWN = {
    "database",
    "outbox_dir",
    "model",
    "sources",
    "destinations",
    "departments",
    "routing",
    "review",
    "classification",
    "delivery",
    "alerts",
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Typed places of the demo configuration and values that cannot be right there.
BAD_VALUES: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("routing", "rules", 1, "min_score"), st.text(string.ascii_letters, min_size=1)),
    (("routing", "rules", 1, "min_score"), st.floats(min_value=1.01, max_value=1e9)),
    (("classification", "thresholds"), st.text(min_size=1) | st.lists(st.integers(), min_size=1)),
    (
        ("delivery", "max_attempts"),
        st.integers(max_value=0) | st.text(string.ascii_letters, min_size=1),
    ),
    (
        ("departments", "support"),
        st.text(min_size=1) | st.integers() | st.lists(st.none(), min_size=1),
    ),
    (("routing", "rules"), st.lists(st.text(min_size=1), min_size=1)),
    (("review", "resurface_after"), st.text(string.ascii_letters, min_size=1)),
    (("review", "batch_threshold"), st.integers(max_value=0)),
    (("sources", 0), st.text(min_size=1) | st.integers()),
    (
        ("sources", 0, "type"),
        st.text(string.ascii_lowercase, min_size=1).filter(lambda t: t not in CONNECTORS),
    ),
    (("sources", 0, "enabled"), st.text(min_size=1) | st.integers(2)),
    (("destinations", "review-channel", "type"), st.sampled_from(["slak", "email", "", "SLACK"])),
    (
        ("routing", "rules", 0, "label"),
        st.text(min_size=1).filter(lambda t: t not in ("kudos", "other")),
    ),
]


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _mappings(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if isinstance(data, dict) else []
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else []
    )
    for key, value in items:
        if not (path and path[-1] == "fields"):  # a file source's own column names
            found += _mappings(value, (*path, key))
    return found


def _check_cli(path: Path, must_name: str | None) -> None:
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    if must_name is not None:
        assert must_name in result.output, result.output


fast = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@fast
@given(place=st.sampled_from(range(len(BAD_VALUES))), data=st.data())
def test_a_wrong_value_anywhere_exits_2_naming_the_key(
    tmp_path: Path, place: int, data: st.DataObject
) -> None:
    path, bad = BAD_VALUES[place]
    config = copy.deepcopy(DEMO_DATA)
    _set(config, path, data.draw(bad))
    file = _write(tmp_path, yaml.safe_dump(config))
    shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    _check_cli(file, shown)


@fast
@given(data=st.data(), key=st.text(string.ascii_letters + "_", min_size=1, max_size=12))
def test_an_unknown_key_in_any_mapping_exits_2_naming_it(
    tmp_path: Path, data: st.DataObject, key: str
) -> None:
    config = copy.deepcopy(DEMO_DATA)
    places = [
        p
        for p in _mappings(config)
        if not (len(p) == 2 and p[0] in ("departments", "destinations"))
    ]
    place = data.draw(st.sampled_from(places))
    target = config
    for part in place:
        target = target[part]
    if (
        key in target
        or (place == () and key in _KNOWN)
        or place in (("departments",), ("destinations",))
    ):
        return  # not unknown there
    if place[-1:] == ("thresholds",):
        return  # a label key: reported as an unknown label, tested above
    target[key] = 1
    _check_cli(_write(tmp_path, yaml.safe_dump(config)), key)


@fast
@given(document=json_values)
def test_any_yaml_document_is_a_configuration_or_a_configuration_error(
    tmp_path: Path, document: Any
) -> None:
    path = _write(tmp_path, yaml.safe_dump(document))
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))
        _check_cli(path, None)


@fast
@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_any_bytes_are_a_configuration_or_a_configuration_error(tmp_path: Path, raw: bytes) -> None:
    path = _write(tmp_path, raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))


def test_classification_overrides_reach_the_flows_classifier(tmp_path: Path) -> None:
    """``classification.service_watch`` and ``margin`` replace the model's; unset keeps them."""
    from classifiers.model import Classifier
    from flows.triage import classifier_for

    shipped = Classifier.load().policy
    assert shipped.service_watch is not None
    plain = classifier_for(load_config(_write(tmp_path, "classification: {}\n"))).policy
    assert (plain.service_watch, plain.margin) == (shipped.service_watch, shipped.margin)
    text = "classification:\n  service_watch: 0.2\n  margin: 0.05\n"
    tuned = classifier_for(load_config(_write(tmp_path, text))).policy
    assert (tuned.service_watch, tuned.margin) == (0.2, 0.05)
    # The flows cache one loaded model per folder: an override must not leak into it.
    again = classifier_for(load_config(_write(tmp_path, "classification: {}\n"))).policy
    assert (again.service_watch, again.margin) == (shipped.service_watch, shipped.margin)
    message = _error(tmp_path, "classification:\n  service_watch: 1.5\n")
    assert "classification.service_watch" in message
