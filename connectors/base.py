"""The connector contract: what every source module provides, stated once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from triage.models import Mention, Rejected


class ConnectorError(RuntimeError):
    """A source cannot be read (unreachable, bad credentials, bad settings); the message says why."""


@dataclass(slots=True)
class FetchBatch:
    """A page of fetched records and the cursor that is safe to store once they are durable."""

    mentions: list[Mention] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    cursor: Any = None
    # Bulk connectors may hand over valid records already laid out as ``items`` rows
    # (``triage.models.ITEM_SCHEMA``): a backfill then skips one Python object per record.
    items: pa.Table | None = None

    @property
    def size(self) -> int:
        """How many records the batch holds: mentions, item rows and rejected records."""
        rows = self.items.num_rows if self.items is not None else 0
        return len(self.mentions) + rows + len(self.rejected)


@dataclass(slots=True)
class SourceContext:
    """What a connector gets to know about its configured source."""

    name: str
    settings: dict[str, Any]
    base_dir: Path
    batch_size: int = 5000
    secret: Callable[[str], str | None] = field(default=lambda name: os.environ.get(name))

    def path(self, key: str) -> Path:
        """Resolve a path setting relative to the configuration file's folder."""
        value = self.settings.get(key)
        if not value:
            raise ConnectorError(f"source '{self.name}': setting '{key}' is required")
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def require(self, key: str) -> Any:
        """Return a required setting or fail with a message naming the source and the key."""
        value = self.settings.get(key)
        if value in (None, "", []):
            raise ConnectorError(f"source '{self.name}': setting '{key}' is required")
        return value


class Connector(Protocol):
    """A source module: ``connectors/<name>.py`` exposes these names."""

    SETTINGS: dict[str, str]
    """Setting name -> one-line description, shown by ``triage sources list``."""

    def fetch(self, ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
        """Yield new records since ``cursor`` in batches; each batch carries the cursor after it."""
        ...

    def check(self, ctx: SourceContext) -> str:
        """Validate settings, credentials and reachability; return a one-line OK message or raise."""
        ...
