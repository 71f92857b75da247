"""The fake Slack of ``tests.fakes.slack`` with an extra ``#triage-alerts`` channel.

Threads matter to the handoffs: a note goes into the item's review thread and is reconciled by
reading that thread, which (as in Slack) ``conversations.history`` does not return; the base fake
serves both as Slack does.
"""

from __future__ import annotations

from tests.fakes.slack import FakeServer, FakeSlack, serve_fake

FakeSlackThreads = FakeSlack


def start_fake_slack_threads(token: str = "xoxb-test-token") -> tuple[FakeSlack, FakeServer]:
    """Start the fake with an extra ``#triage-alerts`` channel on a random local port."""
    state = FakeSlack(token=token)
    state.add_channel("#triage-alerts", "C0ALERTS")
    return state, serve_fake(state)
