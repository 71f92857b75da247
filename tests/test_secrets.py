"""The one secret lookup (``triage.secrets``): env var, then a Prefect Secret block, never logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prefect.blocks.system import Secret

from connectors.base import ConnectorError, SourceContext
from triage.secrets import block_name, env_or_block, secret


def test_env_wins_over_the_block_and_settings_rename_both(monkeypatch: pytest.MonkeyPatch) -> None:
    Secret(value="from-the-block").save("conn-test-token", overwrite=True)
    monkeypatch.delenv("CONN_TEST_TOKEN", raising=False)
    settings = {"token_env": "CONN_TEST_TOKEN", "token_secret": "conn-test-token"}
    # A destination: the env var its settings name, then the block its settings name.
    assert secret(settings, "token_env", "SLACK_BOT_TOKEN", "token_secret") == "from-the-block"
    monkeypatch.setenv("CONN_TEST_TOKEN", "from-the-env")
    assert secret(settings, "token_env", "SLACK_BOT_TOKEN", "token_secret") == "from-the-env"
    # Without a block setting a destination reads the environment only.
    assert secret({}, "token_env", "CONN_TEST_NOTHING") is None
    # A source falls back to the block named after its env var.
    monkeypatch.delenv("CONN_TEST_TOKEN")
    assert block_name("CONN_TEST_TOKEN") == "conn-test-token"
    assert env_or_block("CONN_TEST_TOKEN") == "from-the-block"


def test_a_source_names_where_it_looked_and_never_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = SourceContext(
        name="x",
        settings={"token_env": "MY_X_TOKEN"},
        base_dir=Path("."),
        secret={"MY_X_TOKEN": "s3cr3t-value"}.get,
    )
    with caplog.at_level(logging.DEBUG):
        assert found.require_credential("token_env", "X_BEARER_TOKEN") == "s3cr3t-value"
        nowhere = SourceContext(name="x", settings={}, base_dir=Path("."), secret={}.get)
        with pytest.raises(ConnectorError) as err:
            nowhere.require_credential("token_env", "X_BEARER_TOKEN")
    assert str(err.value) == (
        "source 'x': credential missing: set the X_BEARER_TOKEN environment variable "
        "or a Prefect Secret block named 'x-bearer-token'"
    )
    assert "s3cr3t-value" not in caplog.text
