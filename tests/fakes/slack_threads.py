"""The fake Slack of ``tests.fakes.slack`` plus ``conversations.replies`` and an alerts channel.

Threads matter to the handoffs: a note goes into the item's review thread and is reconciled by
reading that thread, which (as in Slack) ``conversations.history`` does not return.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes.slack import FakeSlack, _make_handler


@dataclass
class FakeSlackThreads(FakeSlack):
    """Adds threads: replies are kept out of channel history and served by conversations.replies."""

    def handle(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Answer ``conversations.replies``; hide replies from history; delegate the rest."""
        if method == "conversations.replies":
            channel = self._channel_id(str(args.get("channel", "")))
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            ts = args.get("ts")
            if not ts:
                return {"ok": False, "error": "invalid_arguments"}
            msgs = self.messages[channel]
            parent = [m for m in msgs if m["ts"] == ts]
            if not parent:
                return {"ok": False, "error": "thread_not_found"}
            replies = [m for m in msgs if m.get("thread_ts") == ts]
            include_meta = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
            out = [
                m if include_meta else {k: v for k, v in m.items() if k != "metadata"}
                for m in parent + replies
            ]
            return {"ok": True, "messages": out, "has_more": False}
        if method == "conversations.history":
            result = super().handle(method, args)
            if result.get("ok"):
                result["messages"] = [
                    m for m in result["messages"] if m.get("thread_ts") in (None, m["ts"])
                ]
            return result
        return super().handle(method, args)

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The replies in one thread."""
        return [m for m in self.messages[channel] if m.get("thread_ts") == ts]


def start_fake_slack_threads(
    token: str = "xoxb-test-token",
) -> tuple[FakeSlackThreads, ThreadingHTTPServer]:
    """Start the fake with an extra ``#triage-alerts`` channel on a random local port."""
    state = FakeSlackThreads(token=token)
    state.channels["#triage-alerts"] = "C0ALERTS"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    return state, server
