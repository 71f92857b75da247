"""Secrets come from environment variables or Prefect Secret blocks, never from files in the repo."""

from __future__ import annotations

import os


def get_secret(env: str | None = None, block: str | None = None) -> str | None:
    """Return a secret from an environment variable, else from a Prefect Secret block.

    Args:
        env: Environment variable name (checked first, so a local override always wins).
        block: Name of a Prefect ``Secret`` block, e.g. ``slack-bot-token``.

    Returns:
        The secret, or None when neither place has it.
    """
    if env and os.environ.get(env):
        return os.environ[env]
    if block:
        try:
            from prefect.blocks.system import Secret

            value = Secret.load(block, _sync=True).get()  # type: ignore[call-arg,union-attr]
        except Exception:  # noqa: BLE001 - any failure here means "not configured"
            # No API reachable or no such block: treat as "not configured", never crash a run.
            return None
        return str(value) if value else None
    return None
