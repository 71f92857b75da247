"""Read and validate the configuration file once, at load: every problem with its line and key.

The sources section is checked against the connector registry, which the caller passes in
(``sources`` and ``check_source``): the registry sits above this core module, which only reads
the connectors' descriptions of their settings. :func:`flows.settings.load_config` is the loader
with the registry filled in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from triage.config import types
from triage.config.messages import describe, located
from triage.config.models import SourceSettings, config_file_model, parse_duration
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
        raise ConfigError(describe(cfg_path, exc, data, node, sources)) from None
    problems = _cross_references(model, check_source)
    if problems:
        raise ConfigError("\n".join(located(cfg_path, node, loc, msg) for loc, msg in problems))
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
        service_watch=model.classification.service_watch,
        adapt_to_source=model.classification.adapt_to_source,
        adapt_history=model.classification.adapt_history,
        adapt_to=model.classification.adapt_to,
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
        registry=config.resolve(m.registry)
        if m.registry
        else location.spool_base(db_path).parent / "models",
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
