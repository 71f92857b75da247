"""Read and validate the configuration file once, at load: every problem with its line and key.

The sources section is checked against the connector registry, which the caller passes in
(``sources`` and ``check_source``): the registry sits above this core module, which only reads
the connectors' descriptions of their settings. :func:`flows.settings.load_config` is the loader
with the registry filled in.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from triage.config import types
from triage.config.models import SourceSettings, config_file_model, json_schema, parse_duration
from triage.config.types import Config, ConfigError, Rule
from triage.models import DEPARTMENTS
from triage.privacy.redact import Redactor
from triage.privacy.registry import retention_tables
from triage.store import location

DEMO_CONFIG = Path(__file__).parent.parent / "demo" / "triage.yaml"
DEFAULT_DB = "triage.duckdb"
# Checks a source's setting values: (type, name, settings); raises ConfigError with the reason.
SourceCheck = Callable[[str, str, dict[str, Any]], None]


def default_config_path() -> Path:
    """Return the configuration to use when none is given.

    ``TRIAGE_CONFIG`` wins, then ``./triage.yaml``, then the bundled demo configuration.
    """
    env = os.environ.get("TRIAGE_CONFIG")
    if env:
        return Path(env)
    local = Path("triage.yaml")
    return local if local.exists() else DEMO_CONFIG


def read_config(
    path: str | os.PathLike[str] | None = None,
    *,
    sources: SourceSettings,
    check_source: SourceCheck | None = None,
    database: str | None = None,
) -> Config:
    """Read, validate and normalise a configuration file.

    Every check happens here, before anything runs: the file's shape against
    :func:`triage.config.models.config_file_model` (unknown keys, types, ranges, each source's
    settings from its connector's description), then the names that refer to each other
    (departments, destinations, the review and alerts destinations).

    Args:
        path: The YAML file; None picks :func:`default_config_path`.
        sources: Each source type's settings description (the connectors' ``SETTINGS``).
        check_source: Checks a source's values beyond their names (a connector's ``validate``).
        database: Overrides the database path (else ``TRIAGE_DB``, else the file's ``database``,
            else ``./triage.duckdb``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Naming the file, the line and the key of every problem found.
    """
    cfg_path = Path(path) if path is not None else default_config_path()
    data, node = _read_yaml(cfg_path)
    try:
        model = config_file_model(sources).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(cfg_path, exc, data, node, sources)) from None
    problems = _cross_references(model, check_source)
    if problems:
        raise ConfigError("\n".join(_located(cfg_path, node, loc, msg) for loc, msg in problems))
    return _build(cfg_path, model, database)


def _read_yaml(cfg_path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its YAML node tree (for line numbers); any failure is a ConfigError."""
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {cfg_path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{cfg_path} is a directory, not a configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{cfg_path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read the configuration: {exc.strerror}") from None
    try:
        loader = yaml.SafeLoader(text)  # this already refuses control characters
        try:
            node = loader.get_single_node()
            if node is not None:
                _refuse_duplicate_keys(cfg_path, node)
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{cfg_path}: the YAML is nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping of keys (sources:, ...)")
    return data, node


def _refuse_duplicate_keys(cfg_path: Path, root: yaml.Node) -> None:
    # YAML keeps the last of two equal keys without a word; in a configuration that hides an edit.
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise ConfigError(
                            f"{cfg_path}:{key.start_mark.line + 1}: key '{key.value}' appears twice"
                        )
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _describe(
    cfg_path: Path,
    exc: ValidationError,
    data: Any,
    node: yaml.Node | None,
    sources: SourceSettings,
) -> str:
    """One line per problem: ``file:line: key.path: what is wrong``."""
    merged: dict[tuple[str | int, ...], list[str]] = {}
    got: dict[tuple[str | int, ...], str] = {}
    for err in exc.errors():
        loc, msg, value = _explain(err, data, sources)
        msgs = merged.setdefault(loc, [])
        if msg not in msgs:
            msgs.append(msg)
        if value is not None:
            got[loc] = value
    ordered = sorted(merged, key=lambda loc: _line_of(node, loc) or 0)  # as they read in the file
    lines = [
        _located(
            cfg_path,
            node,
            loc,
            " or ".join(merged[loc]) + (f" (got {got[loc]})" if loc in got else ""),
        )
        for loc in ordered
    ]
    if len(lines) > 10:
        lines = [*lines[:10], f"... and {len(lines) - 10} more"]
    return "\n".join(lines)


def _explain(
    err: Any, data: Any, sources: SourceSettings
) -> tuple[tuple[str | int, ...], str, str | None]:
    """The error's location in the file's own keys, a message a user can act on, the bad value."""
    kind = err["type"]
    loc = _file_path(err["loc"], data, missing=kind == "missing")
    value = err.get("input")
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _known_keys(sources), n=1, cutoff=0.75)
        what = "unknown key"
        if len(loc) == 3 and loc[0] == "sources":  # a connector's setting: name the source too
            what = f"unknown setting '{loc[2]}' of source '{_source_name(data, loc[1])}'"
        return loc, what + (f" (did you mean '{hint[0]}'?)" if hint else ""), None
    if kind == "missing":
        return loc, "required key is missing", None
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        if not isinstance(value, dict):
            return loc, "expected a mapping", _show(value)
        if kind == "union_tag_not_found":
            return (*loc, "type"), "required key is missing", None
        what = "source" if loc and loc[0] == "sources" else "destination"
        tags = sorted(err["ctx"]["expected_tags"].replace("'", "").split(", "))
        hint = difflib.get_close_matches(str(value["type"]), tags, n=1, cutoff=0.6)
        known = f"did you mean '{hint[0]}'? " if hint else ""
        known += f"known: {', '.join(tags)}"
        return (*loc, "type"), f"unknown {what} type ({known})", _show(value["type"])
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return loc, "expected a mapping", _show(value)
    if kind == "invalid_key":
        return loc, "keys must be text", None
    if kind == "value_error":  # our own validators: the message already quotes the value
        return loc, str(err["ctx"]["error"]), None
    message = str(err["msg"])
    return loc, f"{message[:1].lower()}{message[1:]}", _show(value)


def _source_name(data: Any, index: Any) -> str:
    try:
        return str(data["sources"][index]["name"])
    except (KeyError, IndexError, TypeError):
        return f"sources[{index}]"


def _file_path(loc: tuple[Any, ...], data: Any, missing: bool) -> tuple[str | int, ...]:
    """The keys of the file along an error's location, without pydantic's own steps.

    Pydantic adds the tag of a discriminated union (``file``), the member type names of a union
    (``bool``, ``constrained-float``) and ``[key]``; a reader wants ``sources[2].pattern``.
    """
    out: list[str | int] = []
    here: Any = data
    for part in loc:
        present = (isinstance(here, dict) and part in here) or (
            isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here)
        )
        if present:
            here = here[part]
            out.append(part)
        elif missing and isinstance(here, dict) and part != here.get("type"):
            out.append(part)  # the key the file lacks
            here = None
    return tuple(out)


def _located(cfg_path: Path, node: yaml.Node | None, loc: tuple[str | int, ...], msg: str) -> str:
    line = _line_of(node, loc)
    where = f"{cfg_path}:{line}" if line else str(cfg_path)
    return f"{where}: {_dotted(loc) or '(top level)'}: {msg}"


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the key (or item) at ``loc``, or of the closest mapping above it."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, nxt = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part >= 0:
            nxt = node.value[part] if part < len(node.value) else None
            line = nxt.start_mark.line + 1 if nxt is not None else line
        if nxt is None:
            break
        node = nxt
    return line


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys(sources: SourceSettings) -> tuple[str, ...]:
    """Every key the configuration knows, anywhere: for "did you mean" on a misspelt one."""
    keys: set[str] = set()
    stack: list[Any] = [json_schema(sources)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys.update(item.get("properties", {}))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return tuple(sorted(keys))


def _cross_references(
    model: Any, check_source: SourceCheck | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """Names that must refer to something defined elsewhere in the file."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, source in enumerate(model.sources):
        if source.name in seen:
            problems.append((("sources", i, "name"), f"source name '{source.name}' is used twice"))
        seen.add(source.name)
    # Each connector may check its settings' values too (``validate`` in connectors/<type>.py).
    for i, source in enumerate(model.sources):
        try:
            if check_source is not None:
                check_source(source.type, source.name, _source_settings(source))
        except ConfigError as exc:
            problems.append((("sources", i), str(exc)))
    destinations = set(model.destinations)

    def destination(loc: tuple[str | int, ...], name: str | None) -> None:
        if name is not None and name not in destinations:
            known = ", ".join(sorted(destinations)) or "none defined"
            problems.append((loc, f"'{name}' is not a configured destination ({known})"))

    for name, dept in model.departments.items():
        if dept is not None:
            destination(("departments", name, "destination"), dept.destination)
            for j, extra in enumerate(dept.also):
                destination(("departments", name, "also", j), extra)
    departments = set(DEPARTMENTS) | set(model.departments)
    for i, rule in enumerate(model.routing.rules):
        if rule.department is not None and rule.department not in departments:
            known = ", ".join(sorted(departments))
            msg = f"unknown department '{rule.department}' (departments: {known})"
            problems.append((("routing", "rules", i, "department"), msg))
    destination(("review", "destination"), model.review.destination)
    destination(("alerts", "destination"), model.alerts.destination)
    destination(("customers", "digest", "destination"), model.customers.digest.destination)
    destination(("models", "destination"), model.models.destination)
    privacy = model.privacy
    for lang, dest_name in privacy.language_destinations.items():
        destination(("privacy", "language_destinations", lang), dest_name)
    tables = retention_tables()
    for table in privacy.retention:
        if table not in tables:
            msg = f"no retention for table '{table}' (tables: {', '.join(tables)})"
            problems.append((("privacy", "retention", table), msg))
    try:
        redactor = Redactor(custom=[p.model_dump() for p in privacy.patterns])
    except ValueError as exc:
        problems.append((("privacy", "patterns"), str(exc)))
        redactor = Redactor()
    for name, dest in model.destinations.items():
        try:
            redactor.check_keep(dest.keep_in_clear)
        except ValueError as exc:
            problems.append((("destinations", name, "keep_in_clear"), str(exc)))
    return problems


def _source_settings(source: Any) -> dict[str, Any]:
    """A source's own settings as written: its keys other than name, type and enabled."""
    settings: dict[str, Any] = source.model_dump(
        exclude_unset=True, exclude={"name", "type", "enabled"}
    )
    return settings


def _build(cfg_path: Path, model: Any, database: str | None) -> Config:
    """The validated file as the :class:`Config` the pipeline reads."""
    sources = [
        types.SourceConfig(
            name=s.name,
            type=s.type,
            settings=_source_settings(s),
            enabled=s.enabled,
        )
        for s in model.sources
    ]
    destinations = {
        name: types.DestinationConfig(
            name=name, type=d.type, settings=d.model_dump(exclude_unset=True, exclude={"type"})
        )
        for name, d in model.destinations.items()
    }
    departments: dict[str, types.DepartmentConfig] = {}
    for name in [*model.departments, *(d for d in DEPARTMENTS if d not in model.departments)]:
        dept = model.departments.get(name)
        auto = dept.auto_handoff if dept is not None else None
        departments[name] = types.DepartmentConfig(
            name=name,
            destination=dept.destination if dept is not None else None,
            # Support is the one department that gets confident items without waiting.
            auto_handoff=(name == "support") if auto is None else auto,
            also=tuple(dept.also) if dept is not None else (),
        )
    rules = [
        Rule(
            department=r.department,
            label=r.label,
            source=r.source,
            min_score=r.min_score,
            keywords=tuple(k.lower() for k in r.keywords),
            name=r.name or f"rule{i}",
        )
        for i, r in enumerate(model.routing.rules)
    ] or default_rules()
    review = model.review
    db = database or os.environ.get("TRIAGE_DB") or model.database or DEFAULT_DB
    db_path: Path | str = db if location.is_server(db) else Path(db).expanduser()
    config = Config(
        path=cfg_path.resolve(),
        # The database lives where the user runs the command, not beside a bundled config.
        database=db_path,
        sources=sources,
        rules=rules,
        departments=departments,
        destinations=destinations,
        thresholds=dict(model.classification.thresholds),
        margin=model.classification.margin,
        model=None,
        outbox_dir=Path(os.environ.get("TRIAGE_OUTBOX_DIR") or model.outbox_dir or "outbox"),
        max_attempts=model.delivery.max_attempts,
        review=types.ReviewConfig(
            spool=Path(review.spool)
            if review.spool
            else Path(str(location.spool_base(db_path)) + ".decisions.jsonl"),
            destination=review.destination,
            batch_threshold=review.batch_threshold,
            resurface_after=parse_duration(review.resurface_after),
        ),
        alerts_destination=model.alerts.destination,
        auto_handoff={
            label: (v if isinstance(v, bool) else float(v))
            for label, v in model.routing.auto_handoff.items()
        },
        privacy=types.PrivacyConfig(
            patterns=tuple(p.model_dump() for p in model.privacy.patterns),
            languages=tuple(model.privacy.languages),
            language_destinations=dict(model.privacy.language_destinations),
            retention={t: parse_duration(d) for t, d in model.privacy.retention.items()},
        ),
    )
    config.customers = _customers(config, model.customers, model.model_fields_set)
    m = model.models
    config.models = types.ModelsConfig(
        # Beside the database by default, like the decision spool: every command finds it.
        registry=config.resolve(m.registry) if m.registry else location.spool_base(db_path).parent / "models",
        keep_versions=m.keep_versions,
        min_new_corrections=m.min_new_corrections,
        destination=m.destination,
        retrain=m.retrain.model_dump(),
        gate=m.gate.model_dump(),
        drift=m.drift.model_dump(),
    )
    if os.environ.get("TRIAGE_MODEL"):
        config.model = Path(os.environ["TRIAGE_MODEL"])
    elif model.model:
        config.model = config.resolve(model.model)
    return config


def _customers(config: Config, section: Any, config_fields: set[str]) -> types.CustomersConfig:
    """The ``customers:`` section with its paths resolved and its durations parsed."""
    outcomes = section.outcomes_file
    return types.CustomersConfig(
        lifecycle=section.lifecycle,
        outcomes_file=(config.resolve(outcomes.path), outcomes.source) if outcomes else None,
        readback_window=timedelta(days=section.readback_days),
        report_since=parse_duration(section.report_since),
        digest_destination=section.digest.destination,
        digest_period=parse_duration(section.digest.period),
        configured="customers" in config_fields,
    )


def default_rules() -> list[Rule]:
    """The default routing (README, "Configuration"): each label to the department that owns it."""
    return [
        Rule(label="service_issue", department="support", name="service_issue"),
        Rule(label="sales_lead", department="sales", name="sales_lead"),
        Rule(label="feature_request", department="product", name="feature_request"),
        Rule(label="kudos", department="marketing", name="kudos"),
        Rule(label="other", department=None, name="other"),
    ]
