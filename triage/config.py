"""Load and validate the triage configuration file (sources, routing rules, destinations)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from triage.models import DEPARTMENTS, LABELS

DEMO_CONFIG = Path(__file__).parent / "demo" / "triage.yaml"
DEFAULT_DB = "triage.duckdb"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or inconsistent; the message says where."""


@dataclass(slots=True)
class SourceConfig:
    """One configured source: a connector type plus its settings."""

    name: str
    type: str
    settings: dict[str, Any]
    enabled: bool = True


@dataclass(slots=True)
class Rule:
    """A routing rule: when every given condition holds, the item goes to ``department``.

    ``department`` may be None: the item is kept and audited but handed to nobody.
    """

    department: str | None
    label: str | None = None
    source: str | None = None
    min_score: float | None = None
    keywords: tuple[str, ...] = ()
    name: str = ""


@dataclass(slots=True)
class DestinationConfig:
    """Where deliveries go: a Slack channel, a helpdesk, a CRM, a tracker or a webhook."""

    name: str
    type: str
    settings: dict[str, Any]


@dataclass(slots=True)
class DepartmentConfig:
    """How a department receives its items."""

    name: str
    destination: str | None
    # Auto handoff skips marketing's review for confident items (issue: service issues go straight).
    auto_handoff: bool = False
    # Further destinations that receive every handoff too (e.g. the CRM plus the sales channel).
    also: tuple[str, ...] = ()


@dataclass(slots=True)
class Config:
    """The whole validated configuration."""

    path: Path
    database: Path
    sources: list[SourceConfig]
    rules: list[Rule]
    departments: dict[str, DepartmentConfig]
    destinations: dict[str, DestinationConfig]
    review_destination: str | None
    thresholds: dict[str, float]
    # None: use the thresholds and margin the model was calibrated with.
    margin: float | None
    model: Path | None
    outbox_dir: Path
    max_attempts: int = 5
    extra: dict[str, Any] = field(default_factory=dict)
    # The whole `review:` mapping (batching, re-surfacing, spool); triage.slack.decisions reads it.
    review: dict[str, Any] = field(default_factory=dict)
    # Per label: True/False, or a minimum score, for handing off without marketing's review.
    # A label not listed falls back to its department's ``auto_handoff``.
    auto_handoff: dict[str, bool | float] = field(default_factory=dict)

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        """Resolve a path from the configuration relative to the configuration file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)


def default_config_path() -> Path:
    """Return the configuration to use when none is given.

    ``TRIAGE_CONFIG`` wins, then ``./triage.yaml``, then the bundled demo configuration.
    """
    env = os.environ.get("TRIAGE_CONFIG")
    if env:
        return Path(env)
    local = Path("triage.yaml")
    return local if local.exists() else DEMO_CONFIG


def _req(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise ConfigError(f"{where}: '{key}' is required")
    return mapping[key]


def load_config(
    path: str | os.PathLike[str] | None = None, *, database: str | None = None
) -> Config:
    """Read, validate and normalise a configuration file.

    Args:
        path: The YAML file; None picks :func:`default_config_path`.
        database: Overrides the database path (else ``TRIAGE_DB``, else the file's ``database``,
            else ``./triage.duckdb``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: With the file and the offending key when anything is wrong.
    """
    cfg_path = Path(path) if path is not None else default_config_path()
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {cfg_path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping")
    where = str(cfg_path)

    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("sources") or []):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: sources[{i}] must be a mapping")
        name = str(_req(raw, "name", f"{where}: sources[{i}]"))
        if name in seen:
            raise ConfigError(f"{where}: source name '{name}' is used twice")
        seen.add(name)
        settings = {k: v for k, v in raw.items() if k not in ("name", "type", "enabled")}
        sources.append(
            SourceConfig(
                name=name,
                type=str(_req(raw, "type", f"{where}: source '{name}'")),
                settings=settings,
                enabled=bool(raw.get("enabled", True)),
            )
        )
    # Each connector describes (and checks) its own settings; imported here to avoid a cycle.
    from connectors import validate_source

    for src in sources:
        try:
            validate_source(src.type, src.name, src.settings)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    destinations: dict[str, DestinationConfig] = {}
    for name, raw in (data.get("destinations") or {}).items():
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: destination '{name}' must be a mapping")
        settings = {k: v for k, v in raw.items() if k != "type"}
        destinations[name] = DestinationConfig(
            name=name,
            type=str(_req(raw, "type", f"{where}: destination '{name}'")),
            settings=settings,
        )

    departments: dict[str, DepartmentConfig] = {}
    for name, raw in (data.get("departments") or {}).items():
        raw = raw or {}
        dest = raw.get("destination")
        if dest is not None and dest not in destinations:
            raise ConfigError(f"{where}: department '{name}' names unknown destination '{dest}'")
        also = tuple(str(a) for a in raw.get("also") or ())
        for extra_dest in also:
            if extra_dest not in destinations:
                raise ConfigError(
                    f"{where}: department '{name}' names unknown destination '{extra_dest}' in also"
                )
        departments[name] = DepartmentConfig(
            name=name,
            destination=dest,
            # Support is the one department that gets confident items without waiting (issue 6).
            auto_handoff=bool(raw.get("auto_handoff", name == "support")),
            also=also,
        )
    for dept in DEPARTMENTS:
        departments.setdefault(
            dept, DepartmentConfig(name=dept, destination=None, auto_handoff=dept == "support")
        )

    rules: list[Rule] = []
    for i, raw in enumerate((data.get("routing") or {}).get("rules") or []):
        label = raw.get("label")
        if label is not None and label not in LABELS:
            raise ConfigError(f"{where}: routing rule {i} has unknown label '{label}'")
        dept = raw.get("department")
        if dept is not None and dept not in departments:
            raise ConfigError(f"{where}: routing rule {i} names unknown department '{dept}'")
        rules.append(
            Rule(
                department=dept,
                label=label,
                source=raw.get("source"),
                min_score=float(raw["min_score"]) if raw.get("min_score") is not None else None,
                keywords=tuple(str(k).lower() for k in raw.get("keywords") or ()),
                name=str(raw.get("name") or f"rule{i}"),
            )
        )
    if not rules:
        rules = default_rules()

    auto_handoff: dict[str, bool | float] = {}
    for label, value in ((data.get("routing") or {}).get("auto_handoff") or {}).items():
        if label not in LABELS:
            raise ConfigError(f"{where}: routing.auto_handoff has unknown label '{label}'")
        if isinstance(value, bool):
            auto_handoff[label] = value
        elif isinstance(value, int | float):
            auto_handoff[label] = float(value)
        else:
            raise ConfigError(
                f"{where}: routing.auto_handoff.{label} must be true, false or a minimum score"
            )

    review = data.get("review") or {}
    review_dest = review.get("destination")
    if review_dest is not None and review_dest not in destinations:
        raise ConfigError(f"{where}: review destination '{review_dest}' is not defined")

    cls = data.get("classification") or {}
    thresholds = {str(k): float(v) for k, v in (cls.get("thresholds") or {}).items()}
    for key in thresholds:
        if key != "default" and key not in LABELS:
            raise ConfigError(f"{where}: classification.thresholds has unknown label '{key}'")

    db = database or os.environ.get("TRIAGE_DB") or data.get("database") or DEFAULT_DB
    config = Config(
        path=cfg_path.resolve(),
        # The database lives where the user runs the command, not beside a bundled config.
        database=Path(db).expanduser(),
        sources=sources,
        rules=rules,
        departments=departments,
        destinations=destinations,
        review_destination=review_dest,
        thresholds=thresholds,
        margin=float(cls["margin"]) if cls.get("margin") is not None else None,
        model=None,
        outbox_dir=Path(os.environ.get("TRIAGE_OUTBOX_DIR") or data.get("outbox_dir") or "outbox"),
        max_attempts=int((data.get("delivery") or {}).get("max_attempts", 5)),
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        review=dict(review),
        auto_handoff=auto_handoff,
    )
    if os.environ.get("TRIAGE_MODEL"):
        config.model = Path(os.environ["TRIAGE_MODEL"])
    elif data.get("model"):
        config.model = config.resolve(str(data["model"]))
    return config


_KNOWN_KEYS = {
    "database",
    "sources",
    "destinations",
    "departments",
    "routing",
    "review",
    "classification",
    "model",
    "outbox_dir",
    "delivery",
}


def default_rules() -> list[Rule]:
    """The default routing of DESIGN.md: each label to the department that owns it."""
    return [
        Rule(label="service_issue", department="support", name="service_issue"),
        Rule(label="sales_lead", department="sales", name="sales_lead"),
        Rule(label="feature_request", department="product", name="feature_request"),
        Rule(label="kudos", department="marketing", name="kudos"),
        Rule(label="other", department=None, name="other"),
    ]
