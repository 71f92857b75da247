"""The one way to look up a secret: an environment variable, then a Prefect Secret block.

Secrets never live in the configuration or the repository, and never reach a log or an error
message: errors name *where* a credential was looked for, never its value. The convention, the
same for sources and destinations (README, "Configuration"):

* a credential has a default environment variable (``SLACK_BOT_TOKEN``, ``X_BEARER_TOKEN``...),
  which a ``<key>_env`` setting renames (``token_env: NIMBUS_BOT_TOKEN``);
* a destination may also name a Secret block (``token_secret: slack-bot-token``); a source falls
  back to the block named after its env var (``X_BEARER_TOKEN`` -> ``x-bearer-token``);
* the environment wins over a block, so a local override always works.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

# Reads one credential by its env var name: the environment, or a test's dictionary.
Reader = Callable[[str], str | None]


def block_name(env: str) -> str:
    """The Secret block named after an environment variable: ``X_BEARER_TOKEN`` -> ``x-bearer-token``."""
    return env.lower().replace("_", "-")


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


def env_or_block(env: str) -> str | None:
    """A credential by its env var name, else from the Secret block named after it (a source's way)."""
    return get_secret(env, block_name(env))


def secret(
    settings: Mapping[str, Any],
    env_key: str,
    default_env: str,
    block_key: str | None = None,
    *,
    read: Reader | None = None,
) -> str | None:
    """The credential a source's or a destination's settings point at.

    Args:
        settings: The source's or destination's settings.
        env_key: The setting that renames the env var, e.g. ``token_env``.
        default_env: The env var without that setting, e.g. ``SLACK_BOT_TOKEN``.
        block_key: The setting that names a Secret block, e.g. ``token_secret`` (destinations).
        read: How to read an env var name; connectors pass their context's reader (the
            environment then the block named after the variable, or a test's dictionary).
            Default: the environment only.

    Returns:
        The secret, or None when it is configured nowhere.

    Example:
        >>> secret({"token_env": "NO_SUCH_VAR"}, "token_env", "SLACK_BOT_TOKEN") is None
        True
    """
    env = str(settings.get(env_key) or default_env)
    block = settings.get(block_key) if block_key else None
    if read is None:
        return get_secret(env, str(block) if block else None)
    return read(env) or (get_secret(None, str(block)) if block else None)


def missing(where: str, env: str) -> str:
    """The message for a credential found nowhere: it names the env var and the Secret block."""
    return (
        f"{where}: credential missing: set the {env} environment variable "
        f"or a Prefect Secret block named '{block_name(env)}'"
    )
