"""The one retry helper (``triage.http``) and the retry predicates of connectors and handoffs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx
import pytest

from connectors.base import ConnectorError
from connectors.http import request
from tests.fakes.base import FakeApi, Reply, Request
from triage.destinations import DeliveryError
from triage.destinations.handoff import call
from triage.http import Backoff, GaveUp, retry, send


@dataclass
class Scripted(FakeApi):
    """Answers with the scripted replies in order, then 200 ``{"ok": true}``."""

    script: list[Reply] = field(default_factory=list)

    def route(self, req: Request) -> Reply:
        return self.script.pop(0) if self.script else (200, {"ok": True}, {})


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    waits: list[float] = []
    with Scripted() as fake, httpx.Client(base_url=fake.url) as client:
        fake.fail_next(429, retry_after=7, times=2)
        resp = send(client, "GET", "/x", Backoff(retries=3, cap=5.0, sleep=waits.append))
    assert resp.status_code == 200
    assert waits == [5.0, 5.0]  # asked for 7 s, capped at 5
    assert fake.statuses() == [429, 429, 200]


def test_backoff_doubles_and_gives_up_after_the_retries() -> None:
    waits: list[float] = []
    policy = Backoff(retries=3, first=1.0, jitter=0.0, sleep=waits.append)
    with Scripted(down=503) as fake, httpx.Client(base_url=fake.url) as client:
        gave_up = pytest.raises(GaveUp, match=r"4 attempts \(HTTP 503\)")
        with gave_up:
            send(client, "GET", "/x", policy)
    assert waits == [1.0, 2.0, 4.0]  # no wait after the last attempt
    assert len(fake.calls) == 4


def test_retry_jitter_leaves_the_global_random_state_alone() -> None:
    """Retries run in worker threads: a caller's seeded ``random`` must not move under them."""
    from connectors.slack_community import _ProportionalJitter
    from triage.delivery import backoff_seconds

    random.seed(11)
    before = random.getstate()
    waits = [Backoff(first=1.0, jitter=0.5).wait(attempt) for attempt in range(3)]
    waits.append(Backoff().wait(0, asked=3.0))
    waits.append(backoff_seconds(2))
    waits.append(_ProportionalJitter().recalculate(1.0))
    assert random.getstate() == before
    # And the waits are still jittered, each within its documented range.
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 3.0 and 4.0 <= waits[2] <= 6.0
    assert 3.0 <= waits[3] <= 3.3 and 30.0 <= waits[4] < 60.0 and 1.0 <= waits[5] <= 1.5


def test_only_the_callers_errors_are_retried() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("connection reset")
        return "ok"

    policy = Backoff(retries=5, sleep=lambda _: None)
    assert retry(flaky, policy, errors=(OSError,)) == "ok" and len(attempts) == 3

    def refused() -> str:
        attempts.append(1)
        raise PermissionError("login refused")  # an OSError, but not one listed below

    attempts.clear()
    with pytest.raises(PermissionError):
        retry(refused, policy, errors=(ConnectionError,))
    assert len(attempts) == 1


def test_connectors_fail_at_once_on_refused_credentials() -> None:
    refused = pytest.raises(ConnectorError, match="HTTP 401: credentials refused")
    fake = Scripted(script=[(401, {"error": "bad token"}, {})])
    with fake, httpx.Client(base_url=fake.start().url) as client, refused:
        request(client, "GET", "/x", Backoff(sleep=lambda _: None))
    assert len(fake.calls) == 1


def test_handoffs_retry_a_rate_limited_403_but_not_a_refused_one() -> None:
    waits: list[float] = []
    limited = (403, {"message": "secondary rate limit"}, {"Retry-After": "2"})
    with Scripted(script=[limited]) as fake, httpx.Client(base_url=fake.url) as client:
        resp = call(client, "POST", "/issues", what="github gh", sleep=waits.append)
        assert resp.status_code == 200 and len(waits) == 1 and 2.0 <= waits[0] <= 2.2
        fake.script.append((403, {"message": "Bad credentials"}, {}))
        with pytest.raises(DeliveryError, match="credentials refused") as err:
            call(client, "POST", "/issues", what="github gh", sleep=waits.append)
    assert err.value.permanent and len(waits) == 1


def test_a_create_that_timed_out_is_not_sent_again() -> None:
    with Scripted() as fake, httpx.Client(base_url=fake.url, timeout=0.5) as client:
        fake.fail_next(0, retry_after=30)  # the server takes the request and never answers
        with pytest.raises(DeliveryError, match="will look up, then retry") as err:
            call(client, "POST", "/tickets", what="zendesk zd", idempotent=False)
        assert not err.value.permanent
        assert [c.method for c in fake.calls] == ["POST"]  # one attempt only
