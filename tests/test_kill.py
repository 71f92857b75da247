"""Hard kills: `triage run` as a subprocess, SIGKILLed at each stage of a backfill, then run again.

A kill -9 gives DuckDB no chance to close cleanly (unlike an in-process SystemExit): the rerun has
to replay the write-ahead log, resume from the cursors, reconcile a delivery left in `sending`
and post nothing twice. Each stage is hit at a known point: the test-only hook
``TRIAGE_TEST_KILL_AT=stage:batch`` (flows/progress.py) makes the process kill itself right after
that batch is handed to the store, and for delivery the fake Slack kills the process after it has
accepted a message and before it answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.clirun import BIN, clean_env
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.slow

FILES = {"forum-export.jsonl": 1_500, "support-export.jsonl": 1_000}
TOTAL = sum(FILES.values())
BATCH = 500
TEXTS = [
    "the app crashes every time I open a shared notebook, please fix {n}",
    "do you have a team plan with SSO? what does it cost for 40 seats {n}",
    "would love a dark mode and an export to markdown option {n}",
    "thanks for the quick fix yesterday, sync is flawless now {n}",
    "what a game last night, anyone watching the finals {n}",
    "billing charged me twice this month, order {n}",
]


@pytest.fixture
def slack(fake_slack: FakeSlack) -> FakeSlack:
    """The fake Slack, which SIGKILLs the triage process (``fake_slack.victim``) once it has
    accepted post number ``fake_slack.kill_after_post`` and before it answers."""
    answer = fake_slack.handle

    def handle(method: str, args: dict[str, Any]) -> dict[str, Any]:
        result = answer(method, args)
        victim, at = getattr(fake_slack, "victim", 0), getattr(fake_slack, "kill_after_post", 0)
        accepted = method == "chat.postMessage" and result.get("ok")
        if accepted and victim and len(fake_slack.posted()) == at:
            os.kill(victim, signal.SIGKILL)
        return result

    fake_slack.handle = handle  # type: ignore[method-assign]
    return fake_slack


@pytest.fixture
def backfill(tmp_path: Path) -> Path:
    """Two export files of 2,500 valid mentions and a configuration that posts each to Slack."""
    drops = tmp_path / "drops"
    drops.mkdir()
    n = 0
    for name, count in FILES.items():
        with (drops / name).open("w", encoding="utf-8") as f:
            for _ in range(count):
                text = TEXTS[n % len(TEXTS)].format(n=n)
                row = {"id": f"m{n}", "text": text, "created_at": 1_760_000_000 + n}
                f.write(json.dumps(row) + "\n")
                n += 1
    config = tmp_path / "triage.yaml"
    config.write_text(
        """
database: triage.duckdb
sources:
  - {name: forum, type: file, path: drops/forum-export.jsonl}
  - {name: support, type: file, path: drops/support-export.jsonl}
departments:
  support: {destination: support-channel, auto_handoff: true}
review: {destination: review-channel}
destinations:
  review-channel: {type: slack, channel: C0REVIEW}
  support-channel: {type: slack, channel: C0SUPPORT}
""",
        encoding="utf-8",
    )
    return tmp_path


def _run(work: Path, slack: FakeSlack, kill_at: str | None = None) -> subprocess.Popen[str]:
    env = clean_env(SLACK_BOT_TOKEN=slack.token, SLACK_API_URL=slack.url)
    if kill_at:
        env["TRIAGE_TEST_KILL_AT"] = kill_at
    return subprocess.Popen(
        [str(BIN / "triage"), "run", "--batch-size", str(BATCH)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=900)
    return proc.returncode, out, err


def _counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        q = lambda sql: int(con.execute(sql).fetchone()[0])
        return {
            "items": q("SELECT count(*) FROM items"),
            "predictions": q("SELECT count(*) FROM predictions"),
            "routes": q("SELECT count(*) FROM routes"),
            "outbox": q("SELECT count(*) FROM outbox"),
            "sent": q("SELECT count(*) FROM outbox WHERE state = 'sent'"),
            "sending": q("SELECT count(*) FROM outbox WHERE state = 'sending'"),
        }


# Where each kill lands, and what the store must show right after it: the stage was hit.
STAGES = {
    "fetch:2": lambda c: 0 < c["items"] < TOTAL and c["predictions"] == 0,
    "classify:2": lambda c: c["items"] == TOTAL and c["predictions"] < TOTAL and c["routes"] == 0,
    "route:1": lambda c: c["predictions"] == TOTAL and c["sent"] == 0,
    "deliver": lambda c: c["routes"] == TOTAL and c["sent"] == 299 and c["sending"] == 1,
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_at_each_stage_loses_nothing_and_duplicates_nothing(
    backfill: Path, slack: FakeSlack, stage: str
) -> None:
    db = backfill / "triage.duckdb"
    if stage == "deliver":
        slack.kill_after_post = 300  # type: ignore[attr-defined]
        proc = _run(backfill, slack)
        slack.victim = proc.pid  # type: ignore[attr-defined]
    else:
        proc = _run(backfill, slack, kill_at=stage)
    code, _, err = _finish(proc)
    assert code == -signal.SIGKILL, err[-2000:]
    after_kill = _counts(db)
    assert STAGES[stage](after_kill), after_kill

    code, out, err = _finish(_run(backfill, slack))

    assert code == 0, err[-3000:]
    assert "delivered: sent" in out
    with duckdb.connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT external_id FROM items").fetchall()]
        per_item = con.execute(
            "SELECT (SELECT count(*) FROM predictions p WHERE p.item_id = i.id), "
            "(SELECT count(*) FROM routes r WHERE r.item_id = i.id) FROM items i"
        ).fetchall()
        outbox = con.execute("SELECT key, state FROM outbox").fetchall()
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
    # Every input item exactly once, one prediction and one route each.
    assert sorted(ids) == sorted(f"m{n}" for n in range(TOTAL))
    assert set(per_item) == {(1, 1)}
    assert quarantined == (0,)
    # No outbox key twice, all delivered, and nothing posted twice to Slack.
    keys = [k for k, _ in outbox]
    assert len(keys) == len(set(keys)) > TOTAL // 2
    assert {s for _, s in outbox} == {"sent"}
    posted = Counter(
        (m.get("metadata") or {}).get("event_payload", {}).get("key") for m in slack.posted()
    )
    assert max(posted.values()) == 1
    assert set(posted) == set(keys)
    if stage == "deliver":
        assert (
            "reconciled 1" in out
        )  # the post Slack accepted before the kill was found, not resent
