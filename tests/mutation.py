"""``make mutation``: mutation testing of the rules that matter, with mutmut.

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) copies the packages to ``mutants/``,
writes every mutant of the rule modules into that copy and runs, for each mutant, the selected fast
tests that reach the mutated function. This script asks it for the rule functions only (whole
modules would spend the time on CLI wiring and messages) and prints the surviving mutants and the
score: killed (or timed out) mutants over all mutants of those functions. A mutant no test reaches
counts as survived.

Usage: ``python -m tests.mutation [--keep]`` (``--keep`` reuses ``mutants/`` and mutmut's results
for functions that did not change).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")

# mutmut's names: module, then ``x_function`` or ``xǁClassǁmethod``, then ``__mutmut_N``.
TARGETS = [
    # The decision rule: primary label, secondary labels, needs_review and its reason.
    "classifiers.model.x_primary_indices__mutmut_*",
    "classifiers.model.x_decide_columns__mutmut_*",
    "classifiers.model.x_decide__mutmut_*",
    # Routing: rule matching, auto-handoff, the route and outbox rows.
    "triage.routing.x_*",
    # Signatures: ours (signing and the intake's check) and Slack's v0.
    "triage.signing.x_sign__mutmut_*",
    "triage.servers.intake.x_verify__mutmut_*",
    "triage.servers.slack_app.x_verify_signature__mutmut_*",
    # The outbox state machine and the drain that drives it.
    "triage.store.outbox.xǁOutboxSectionǁdue_deliveries__mutmut_*",
    "triage.store.outbox.xǁOutboxSectionǁmark_*",
    "triage.store.outbox.xǁOutboxSectionǁ_mark_done__mutmut_*",
    "triage.store.outbox.xǁOutboxSectionǁretry_dead__mutmut_*",
    "triage.store.outbox.xǁOutboxSectionǁunannounced_dead__mutmut_*",
    "triage.delivery.x_drain__mutmut_*",
    "triage.delivery.x__mark_done__mutmut_*",
    # The cursor advance: the social connectors' watermarks and pages, and the store's ingest.
    "connectors.paging.xǁWatermarkǁ*",
    "connectors.paging.xǁHighestIdǁ*",
    "connectors.paging.x_paginate__mutmut_*",
    "connectors.paging.x__pages__mutmut_*",
    "triage.store.ingest.xǁIngestSectionǁget_cursor__mutmut_*",
    "triage.store.ingest.xǁIngestSectionǁingest__mutmut_*",
]

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code).
KILLED = {1, 3, 24, -24, 36, 152, 255}
SKIPPED = {34}


def results() -> dict[str, int | None]:
    """Every target mutant with its recorded exit code (None: not run)."""
    out: dict[str, int | None] = {}
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        for name, code in codes.items():
            if any(fnmatch.fnmatchcase(name, t) for t in TARGETS):
                out[name] = code
    return out


def main(argv: list[str]) -> int:
    """Run mutmut over the targets and print the survivors and the score line."""
    if "--keep" not in argv:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    env = dict(os.environ)
    # The selected tests never touch Prefect: no test server per mutant, and a Prefect call would
    # fail the clean run at once (a dead local port) instead of quietly starting one.
    env["TRIAGE_TESTS_WITHOUT_PREFECT"] = "1"
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    (ROOT / "mutants").mkdir(exist_ok=True)
    log = ROOT / "mutants" / "mutation.log"
    started = time.monotonic()
    print(f"mutmut: the rule functions' mutants (log: {log.relative_to(ROOT)}) ...", flush=True)
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(
            [str(MUTMUT), "run", *TARGETS],
            check=False,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    elapsed = time.monotonic() - started
    found = results()
    if proc.returncode != 0 or not found:
        print(f"mutmut failed (exit {proc.returncode}); see {log}", file=sys.stderr)
        return proc.returncode or 1
    counted = {k: v for k, v in found.items() if v not in SKIPPED}
    killed = sorted(k for k, v in counted.items() if v in KILLED)
    survivors = sorted(set(counted) - set(killed))
    per_module = Counter(k.split(".x", 1)[0] for k in counted)
    dead_per_module = Counter(k.split(".x", 1)[0] for k in killed)
    for module in sorted(per_module):
        print(f"  {module}: killed {dead_per_module[module]} of {per_module[module]}")
    if survivors:
        print("surviving mutants (`.venv/bin/mutmut show NAME` prints the change):")
        for name in survivors:
            print(f"  {name} (exit {counted[name]})")
    total = len(counted)
    # Rounded down: 84.9% is not 85%.
    score = math.floor(100 * len(killed) / total) if total else 0
    print(f"run time: {elapsed:.0f} s")
    print(f"mutation score: {score}% (killed {len(killed)} of {total})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
