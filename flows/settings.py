"""The configuration with the connector registry filled in: what flows, commands and tests load.

The core loader (:func:`triage.config.read_config`) knows nothing of the connectors; this layer
sits above both and passes it each connector's settings description and value check.

(Not ``flows/config.py``: a Prefect worker loads ``flows/triage.py`` as a module named ``triage``
that searches this folder first, so a module here must not share a name with one of ``triage``'s.)
"""

from __future__ import annotations

import os
from typing import Any

from connectors import CONNECTORS, validate_source
from triage import config as core
from triage.config import Config

# Each source type's settings, as its connector describes them (``SETTINGS``).
SOURCE_SETTINGS = {kind: module.SETTINGS for kind, module in CONNECTORS.items()}


def load_config(
    path: str | os.PathLike[str] | None = None, *, database: str | None = None
) -> Config:
    """Read and validate a configuration file, each source against its connector.

    Args:
        path: The YAML file; None picks :func:`triage.config.default_config_path`.
        database: Overrides the database path (else ``TRIAGE_DB``, else the file's ``database``).

    Raises:
        triage.config.ConfigError: Naming the file, the line and the key of every problem found.
    """
    return core.read_config(
        path, sources=SOURCE_SETTINGS, check_source=validate_source, database=database
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file (``triage config schema``)."""
    return core.json_schema(SOURCE_SETTINGS)


def settings_at_run_time(
    config_path: str | None, database: str | None
) -> tuple[str | None, str | None]:
    """The configuration and database a run uses, read when the run starts.

    An explicit parameter wins, then the environment (``TRIAGE_CONFIG``, ``TRIAGE_DB``), then the
    Prefect variables ``triage_config`` and ``triage_db``. The variables are read here, at run
    time, so ``prefect variable set triage_db … --overwrite`` applies to the next scheduled run
    without a redeploy.
    """
    from prefect.variables import Variable

    def pick(given: str | None, env: str, variable: str) -> str | None:
        if given:
            return given
        if os.environ.get(env):
            return os.environ[env]
        value = Variable.get(variable, default=None)
        return str(value) if value else None

    return pick(config_path, "TRIAGE_CONFIG", "triage_config"), pick(
        database, "TRIAGE_DB", "triage_db"
    )
