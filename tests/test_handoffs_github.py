"""GitHub handoffs against the parts of GitHub's contract that its docs state and that bite late.

The rate limit on creating content, which GitHub may answer with a 403 that names no wait, and the
labels it drops from a new issue, without an error, when the token's account has no push access.
Run through the real destination and outbox against the GitHub fake, like ``test_handoffs``.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.fakes.github import start_fake_github
from tests.test_handoffs import (
    World,
    key,
    world,  # noqa: F401 - the fixture (pytest finds it by this name)
)
from triage.destinations.handoff import RATE_LIMIT_WAIT, call

FEATURES = [
    ("f1", "@ann", "Please add dark mode, my eyes hurt at night"),
    ("f3", "@cy", "let us export notes to CSV please"),
]


def test_a_403_rate_limit_naming_no_wait_is_waited_out_for_a_minute_not_dead_lettered() -> None:
    # GitHub's secondary limit may come as a 403 with neither Retry-After nor a spent quota:
    # read as refused credentials, every handoff of a busy minute went to the dead letters.
    waits: list[float] = []
    with start_fake_github() as fake, httpx.Client(
        base_url=fake.url, headers={"Authorization": f"Bearer {fake.token}"}
    ) as client:
        path = f"/repos/{fake.repo}/issues"
        fake.fail_next(403, path=path, method="POST")
        resp = call(
            client, "POST", path, json={"title": "t"}, what="github gh", sleep=waits.append
        )
        assert resp.status_code == 201
        # "Wait for at least one minute before retrying" (with jitter on top, never less).
        assert len(waits) == 1 and RATE_LIMIT_WAIT <= waits[0] <= RATE_LIMIT_WAIT * 1.1
        # The same limit as a 429, and one that names its wait: that wait, not a minute.
        fake.fail_next(429, path=path, method="POST")
        fake.fail_next(403, retry_after=2, path=path, method="POST")
        call(client, "POST", path, json={"title": "t"}, what="github gh", sleep=waits.append)
        assert waits[1] >= RATE_LIMIT_WAIT and 2.0 <= waits[2] <= 2.2
    assert len(fake.issues) == 2


def test_issues_whose_labels_github_dropped_are_still_found_and_the_drop_is_said(
    world: World,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without push access GitHub opens the issue but drops its labels. Our issues were found again
    # by their first label only: a create that timed out then opened a second issue on retry.
    gh = world.github
    gh.push_access = False
    gh.fail_next(0, retry_after=1.0, path=f"/repos/{gh.repo}/issues", method="POST")
    world.add(FEATURES[:1])
    with caplog.at_level(logging.WARNING, logger="triage.handoffs"):
        assert world.run()["failed"] == 1  # the create timed out: looked up before a retry
        world.make_due()
        assert world.run()["failed"] == 0
        (issue,) = gh.issues.values()
        assert issue["labels"] == []
        assert world.outbox()[key("f1", "github")] == "sent"
        world.add(FEATURES[1:])
        world.run()
    assert len(gh.issues) == 2
    (warning,) = [r.getMessage() for r in caplog.records if "without the labels" in r.getMessage()]
    assert "issue #2" in warning and "push access" in warning
