"""The spools that make a post or a click durable before it is acknowledged (``triage.spool``).

A spool is only as good as its worst line: these tests write what a full disk and a crash leave
behind, with real files, and check that nothing acknowledged is lost and nothing torn blocks the
lines after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from triage.review.clicks import Decision
from triage.review.spool import DecisionSpool

# Run in a child process: RLIMIT_FSIZE is how a nearly full disk looks to a writer (the write()
# comes back short, then fails), and it must not limit the test process's own files.
_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from triage.spool import JsonlSpool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
path = Path(sys.argv[1])
spool = JsonlSpool(path)
spool.append(b'{"id": "a"}\\n')
room = path.stat().st_size + 10  # ten bytes of the next record fit, the rest does not
resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
try:
    spool.append(b'{"id": "b", "text": "' + b"x" * 100 + b'"}\\n')
    print("acknowledged")
except OSError as exc:
    print("refused", exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
spool.append(b'{"id": "c"}\\n')
"""


def test_a_record_that_does_not_fit_on_the_disk_is_refused_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # The short write went unnoticed: the post was acknowledged with ten bytes of it on disk, and
    # the next append glued those onto a line that its reader then quarantined.
    path = tmp_path / "intake.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split()[0] == "refused", done.stdout
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "c"}\n'


def decision(n: int, name: str) -> Decision:
    return Decision(
        decision_id=f"d{n}",
        item_id=f"item-{n}",
        action="confirm",
        value=None,
        user_id="U024BE7LH",
        user_name=name,
        decided_at="2026-12-03T18:00:00+00:00",
    )


def test_a_line_torn_inside_a_character_is_set_aside_and_the_others_are_read(
    tmp_path: Path,
) -> None:
    # Decisions are written as UTF-8 (names and labels are not ASCII); a crash can cut a line
    # inside a character. The whole file then failed to decode: every later pass raised, and no
    # decision, before or after the torn one, was ever applied.
    path = tmp_path / "t.decisions.jsonl"
    spool = DecisionSpool(path)
    spool.append([decision(1, "Zoë")])
    torn = json.dumps(asdict(decision(2, "Renée")), ensure_ascii=False).encode()
    with path.open("ab") as fh:
        fh.write(torn[: torn.index("é".encode()) + 1])  # the first byte of 'é' only
    spool.append([decision(3, "José")])

    assert [d.decision_id for d in spool.read()] == ["d1", "d3"]
    assert [d.user_name for d in spool.read()] == ["Zoë", "José"]  # set aside once, not again
    (rejected,) = (tmp_path / "t.decisions.jsonl.rejected").read_text().splitlines()
    assert '"decision_id": "d2"' in json.loads(rejected)["line"]
