"""The configuration: one YAML file, validated once at load (README, "Configuration").

* :mod:`~triage.config.models`: the file's shape as pydantic models (unknown keys refused) and
  the JSON Schema editors use;
* :mod:`~triage.config.load`: reading the file, every problem as one line with its location,
  cross-references, and the typed :class:`Config` the pipeline reads;
* :mod:`~triage.config.types`: those typed records.
"""

from __future__ import annotations

from triage.config.load import (
    DEFAULT_DB,
    DEMO_CONFIG,
    SourceCheck,
    default_config_path,
    default_rules,
    read_config,
)
from triage.config.models import SourceSettings, json_schema, parse_duration
from triage.config.types import (
    Config,
    ConfigError,
    CustomersConfig,
    DepartmentConfig,
    DestinationConfig,
    ModelsConfig,
    ReviewConfig,
    Rule,
    SourceConfig,
)

__all__ = [
    "DEFAULT_DB",
    "DEMO_CONFIG",
    "Config",
    "ConfigError",
    "CustomersConfig",
    "DepartmentConfig",
    "DestinationConfig",
    "ModelsConfig",
    "ReviewConfig",
    "Rule",
    "SourceCheck",
    "SourceConfig",
    "SourceSettings",
    "default_config_path",
    "default_rules",
    "json_schema",
    "parse_duration",
    "read_config",
]
