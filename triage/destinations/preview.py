"""JSON previews: what would be sent, written as files, for running without credentials."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from triage.config import Config, DestinationConfig
from triage.destinations.base import Destination, render
from triage.models import DeliveryItem
from triage.store import Store


class PreviewDestination:
    """Writes each delivery as ``<folder>/<name>/<key>.json``; the file name is the key."""

    preview = True

    def __init__(self, name: str, folder: Path, channel: str | None = None) -> None:
        """Create a preview destination writing under ``folder/name``."""
        self.name = name
        self.folder = folder / name
        self.channel = channel

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def bind(self, store: Store, destinations: dict[str, Destination]) -> None:
        """Nothing to prepare: a preview needs no store and no peers."""

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Write the message atomically; the file name is the idempotency key."""
        return self.write(key, {"kind": kind, "item_id": item.id, **render(kind, item)})

    def write(self, key: str, doc: dict[str, Any]) -> str:
        """Write one preview document (with the channel) atomically; return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {"channel": self.channel, **doc}
        tmp = self._path(key).with_suffix(".tmp")
        tmp.write_text(
            json.dumps(body, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
        )
        os.replace(tmp, self._path(key))
        return str(self._path(key))

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """A preview exists when its file does."""
        return str(self._path(key)) if self._path(key).exists() else None


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``preview`` destination (also what the others fall back to without credentials)."""
    return PreviewDestination(dest.name, config.outbox_dir, dest.settings.get("channel"))
