"""The ``triage`` command line (:mod:`triage.cli.app`), with the benchmark.

The top layer (README, "Architecture"): it may import everything below it, and nothing imports it.
"""

from __future__ import annotations

# First: `triage run` measures wall time from the moment the command line starts importing.
from triage.cli import clock  # noqa: F401  isort: skip
from triage.cli.app import app, main

__all__ = ["app", "main"]
