"""The connector contract: what every source module provides, stated once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from triage import secrets
from triage.models import Mention, Rejected, cap_raw, raw_text


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
    # What the operator should know about this fetch that is neither a record nor an error (a drop
    # file whose end waits for its writer): it reaches the run summary, not the store.
    notes: list[str] = field(default_factory=list)

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
    # Reads a credential by its env var name. Flows and the CLI pass ``triage.secrets.env_or_block``
    # (the environment, then the Secret block named after the variable); tests pass a dictionary.
    secret: Callable[[str], str | None] = field(default=lambda name: os.environ.get(name))

    def path(self, key: str) -> Path:
        """Resolve a path setting relative to the configuration file's folder."""
        value = self.settings.get(key)
        if not value:
            raise ConnectorError(f"source '{self.name}': setting '{key}' is required")
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def credential(self, env_key: str, default_env: str) -> str | None:
        """The credential this source's settings point at (``<key>_env`` renames the env var)."""
        return secrets.secret(self.settings, env_key, default_env, read=self.secret)

    def require_credential(self, env_key: str, default_env: str) -> str:
        """Like :meth:`credential`, failing with a message that names the env var and the block."""
        value = self.credential(env_key, default_env)
        if not value:
            env = str(self.settings.get(env_key) or default_env)
            raise ConnectorError(secrets.missing(f"source '{self.name}'", env))
        return value

    def reject(self, reason: str, record: Any, external_id: Any = None) -> Rejected:
        """Quarantine one record this source cannot read, keeping a bounded copy for audit."""
        ext = None if external_id in (None, "") else str(external_id)[:500]
        raw = cap_raw(raw_text(record))
        return Rejected(source=self.name, reason=reason, raw=raw, external_id=ext)

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
