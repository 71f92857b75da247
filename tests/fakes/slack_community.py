"""The fake Slack Web API, extended for reading a community workspace's channel history.

Built on :mod:`tests.fakes.slack` (same auth, call log and failure injection). Here
``conversations.history`` behaves as Slack documents it for readers: the channel must be an id,
``oldest``/``latest`` bound the window (exclusive unless ``inclusive``), newest first, ``limit``
up to 999, cursor paging with ``has_more`` and ``response_metadata.next_cursor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from tests.fakes.base import LocalServer
from tests.fakes.slack import FakeSlack, _make_handler


@dataclass
class FakeCommunitySlack(FakeSlack):
    """A community workspace; post messages with :meth:`add` (they get the given time as ts)."""

    _seq: int = 0

    def add(self, text: str, created: datetime, channel: str = "C0COMMUNITY", **extra: Any) -> str:
        """Store a user's message; returns its external id (``channel:ts``)."""
        self._seq += 1
        ts = f"{int(created.timestamp())}.{self._seq:06d}"
        msg = {"type": "message", "user": "U0MEMBER", "text": text, "ts": ts, **extra}
        self.messages[channel].append(msg)
        return f"{channel}:{ts}"

    def add_raw(self, msg: dict[str, Any], channel: str = "C0COMMUNITY") -> None:
        """Store a message as given (e.g. malformed)."""
        self.messages[channel].append(msg)

    def handle(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Answer ``conversations.history`` with windows; everything else as the base fake."""
        if method != "conversations.history":
            return super().handle(method, args)
        channel = str(args.get("channel") or "")
        if channel not in self.channels.values():
            return {"ok": False, "error": "channel_not_found"}
        try:
            limit = int(args.get("limit", 100))
        except ValueError:
            return {"ok": False, "error": "invalid_limit"}
        limit = max(1, min(limit, 999))
        inclusive = str(args.get("inclusive", "")).lower() in {"1", "true"}
        oldest = float(args.get("oldest") or 0)
        latest = float(args["latest"]) if args.get("latest") else float("inf")

        def key(m: dict[str, Any]) -> float:
            try:
                return float(m.get("ts") or 0)
            except ValueError:
                return 0.0

        def inside(m: dict[str, Any]) -> bool:
            t = key(m)
            if inclusive:
                return oldest <= t <= latest
            return oldest < t < latest

        msgs = sorted((m for m in self.messages[channel] if inside(m)), key=key, reverse=True)
        start = int(args.get("cursor") or 0)
        page = msgs[start : start + limit]
        more = start + limit < len(msgs)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }


class CommunitySlackServer:
    """Runs a :class:`FakeCommunitySlack` on 127.0.0.1 at a random port (FakeApi-like surface)."""

    def __init__(self) -> None:
        self.state = FakeCommunitySlack(token="xoxb-community")
        self.state.channels = {"#community": "C0COMMUNITY", "#help": "C0HELP"}
        self._server: LocalServer | None = None
        self.url = ""

    def start(self) -> Self:
        """Serve in a daemon thread (the shared plumbing of tests/fakes/base.py)."""
        self._server = LocalServer(_make_handler(self.state), self.state.unstall.set)
        self.url = self.state.url = f"{self._server.url}/api/"
        return self

    def stop(self) -> None:
        """Shut the server down."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The generic connector tests drive every fake through the same few names.
    def add(self, text: str, created: datetime) -> str:
        """Post a user's message in #community."""
        return self.state.add(text, created)

    def fail_next(self, status: int = 429, retry_after: float = 0, times: int = 1) -> None:
        """Fail the next history calls (429 with Retry-After, or a 5xx)."""
        self.state.fail_next("conversations.history", status, retry_after, times)

    @property
    def down(self) -> int | None:
        """Unused getter; assigning a status makes every history call fail with it."""
        return None

    @down.setter
    def down(self, status: int | None) -> None:
        if status:
            self.state.fail_next("conversations.history", status, 0, times=1000)

    def served(self, path_part: str = "") -> list[Any]:
        """History calls answered 200."""
        return self.state.calls_to("conversations.history")

    def statuses(self) -> list[int]:
        """Statuses of all calls in order."""
        return [c.status for c in self.state.calls]
