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
