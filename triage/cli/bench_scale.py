"""``triage bench --workers W --database URL|postgres``: one backlog, one worker, then W workers.

Each worker is its own process running the flow's stages (fetch and store, classify, route, and
in the kill run deliver) the way a flow run does, against one shared store, over and over until
the backlog is done; the clock starts once every worker has loaded its model. Three runs on fresh
databases: one worker, W workers, and W workers of which one is killed (SIGKILL) a third of the
way through classification and again in the middle of its deliveries, then restarted. The
embedded DuckDB default (one worker: the file admits one writer) runs the same data for
``duckdb_per_s``. ``duplicates`` and ``lost`` are counted over every run from the store and from
what the local Slack sink received.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from triage.cli.bench_data import DESTINATIONS, generate, write_config
from triage.cli.bench_sink import SlackSink

# Deliveries drained per worker in the kill run (a real channel takes about one message a second;
# the local sink measures our side, and the kill test needs enough rows in flight, not all).
KILL_DELIVERIES = 600


class RecordingSink(SlackSink):
    """The bench sink that also keeps every message, so repeats and reconciliation are real.

    ``conversations.history`` pages the channel newest first, 200 at a time, with the metadata
    the delivery path looks a key up by after a crash.
    """

    def __init__(self, channels: dict[str, str]) -> None:
        """Serve ``channels`` and record what is posted to them."""
        super().__init__(channels)
        self.messages: dict[str, list[dict[str, Any]]] = {cid: [] for cid in channels.values()}

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Answer like :class:`SlackSink`, keeping posts and serving them back as history."""
        if method == "conversations.history" and args.get("channel") in self.messages:
            with self._lock:
                newest_first = self.messages[args["channel"]][::-1]
            start = int(args.get("cursor") or 0)
            limit = int(args.get("limit") or 100)
            page = newest_first[start : start + limit]
            more = start + limit < len(newest_first)
            meta = {"next_cursor": str(start + limit) if more else ""}
            return {"ok": True, "messages": page, "response_metadata": meta}
        reply = super().answer(method, args)
        if method == "chat.postMessage" and reply.get("ok"):
            metadata = args.get("metadata") or {}
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            with self._lock:
                self.messages[args["channel"]].append({"ts": reply["ts"], "metadata": metadata})
        return reply

    def keys(self) -> Counter[str]:
        """How many times each delivery key was posted."""
        with self._lock:
            return Counter(
                str((m["metadata"].get("event_payload") or {}).get("key"))
                for msgs in self.messages.values()
                for m in msgs
            )


def worker(config_path: str, deliver_limit: int) -> None:
    """One worker process: load the model, say ``ready``, wait for ``go``, work until done."""
    from flows.settings import load_config
    from flows.triage import (
        classifier_for,
        classify_pending,
        deliver_pending,
        ingest,
        route_pending,
    )

    config = load_config(config_path)
    classifier_for(config)
    print("ready", flush=True)
    sys.stdin.readline()
    done = Counter[str]()
    seconds: defaultdict[str, float] = defaultdict(float)

    def timed(stage: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        result = run()
        seconds[stage] += time.perf_counter() - started
        return result

    while True:
        leased_elsewhere, fetched = False, 0
        for source in config.sources:
            result = timed("fetch", lambda s=source: ingest(config, s))  # type: ignore[misc]
            leased_elsewhere |= result.get("leased") is False
            fetched += result["fetched"]
        classified = timed("classify", lambda: classify_pending(config))["classified"]
        routed = timed("route", lambda: route_pending(config))["routed"]
        done["fetched"] += fetched
        done["classified"] += classified
        done["routed"] += routed
        if not (fetched or classified or routed or leased_elsewhere):
            break
        if not (classified or routed):
            time.sleep(0.2)  # another worker is still fetching: its items will come
            seconds["waiting"] += 0.2
    if deliver_limit:
        done["delivered"] += deliver_pending(config, limit=deliver_limit)["sent"]
    print(json.dumps({**done, "seconds": {k: round(v, 2) for k, v in seconds.items()}}), flush=True)


# The stderr file of each process started by ``spawn``, by pid.
_ERRORS: dict[int, IO[str]] = {}


def spawn(args: list[str], env: dict[str, str] | None, count: int) -> list[subprocess.Popen[str]]:
    """Start ``count`` processes of this module and wait until each has said ``ready``."""
    started = []
    for _ in range(count):
        # Its stderr is kept in a file (closed with the process), so a failure says why (``_why``).
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - outlives this function
        p = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        _ERRORS[p.pid] = log
        started.append(p)
    for p in started:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a bench process failed to start (exit {p.wait()}){_why(p)}")
    return started


def _why(p: subprocess.Popen[str]) -> str:
    """The last lines a failed process wrote to stderr."""
    err = _ERRORS.get(p.pid)
    if err is None:
        return ""
    err.seek(0)
    return ":\n" + "\n".join(err.read().splitlines()[-15:])


class Workers:
    """Worker processes over one store: started, released together, killed, waited for."""

    def __init__(self, config_path: Path, env: dict[str, str], deliver_limit: int = 0) -> None:
        """Prepare workers for ``config_path`` with ``env`` (TRIAGE_DB, the sink's token)."""
        self.args = [sys.executable, "-m", "triage.cli.bench_scale", str(config_path)]
        self.args.append(str(deliver_limit))
        self.env = env
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, count: int) -> list[subprocess.Popen[str]]:
        """Start ``count`` workers and wait until each has loaded its model."""
        started = spawn(self.args, self.env, count)
        self.procs += started
        return started

    @staticmethod
    def go(procs: list[subprocess.Popen[str]]) -> None:
        """Release the workers (they wait after loading so the clock excludes start-up)."""
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()

    def wait(self) -> list[dict[str, Any]]:
        """Wait for every worker and return what each finished one did.

        A worker that failed (not killed by us) is an error.
        """
        reports = []
        for p in self.procs:
            out = p.communicate()[0] if p.stdout is not None else ""
            if p.returncode not in (0, -signal.SIGKILL):
                raise RuntimeError(f"a bench worker failed with exit code {p.returncode}{_why(p)}")
            lines = [line for line in (out or "").splitlines() if line.startswith("{")]
            if lines:
                reports.append(json.loads(lines[-1]))
        return reports

    def kill_all(self) -> None:
        """Stop whatever is still running (after an error)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _count(database: str, sql: str) -> int:
    from triage.store import open_store

    with open_store(database) as store:
        return int(store._scalar(sql) or 0)


def timed_run(
    config_path: Path, env: dict[str, str], count: int
) -> tuple[float, list[dict[str, Any]]]:
    """Seconds for ``count`` workers to finish the backlog (from the moment all are ready), and
    what each did."""
    workers = Workers(config_path, env)
    try:
        procs = workers.start(count)
        started = time.perf_counter()
        workers.go(procs)
        reports = workers.wait()
        return time.perf_counter() - started, reports
    finally:
        workers.kill_all()


def _when(check: Callable[[], bool], procs: list[subprocess.Popen[str]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if all(p.poll() is not None for p in procs):
            return False
        time.sleep(0.05)
    return False


def kill_run(
    config_path: Path, env: dict[str, str], database: str, n: int, count: int, sink: RecordingSink
) -> dict[str, Any]:
    """W workers, one SIGKILLed mid-classification and one mid-delivery, each restarted."""
    workers = Workers(config_path, env, deliver_limit=KILL_DELIVERIES)
    kills = 0
    try:
        procs = workers.start(count)
        workers.go(procs)
        victim = procs[0]
        third = n // 3

        def classified() -> bool:
            return _count(database, "SELECT count(*) FROM predictions") >= third

        if _when(classified, procs, 3600) and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.go(workers.start(1))
        # Then, once deliveries are under way, kill whichever worker is still running.
        before = sink.posted
        alive = [p for p in workers.procs if p.poll() is None]
        if _when(lambda: sink.posted >= before + 50, alive, 3600):
            running = [p for p in workers.procs if p.poll() is None]
            if running:
                running[-1].send_signal(signal.SIGKILL)
                running[-1].wait()
                kills += 1
                workers.go(workers.start(1))
        workers.wait()
    finally:
        workers.kill_all()
    return {"kills": kills}


def check(database: str, n: int, sink: RecordingSink | None = None) -> tuple[int, int]:
    """``(duplicates, lost)`` of a finished run, from the store and the sink.

    Lost: a mention without its item, prediction or route, a delivery marked sent that the sink
    never received, or one left half-sent. Duplicates: a key stored
    more than once (the primary keys forbid it; counted anyway) or a message posted twice.
    """
    from triage.store import open_store

    with open_store(database) as store:
        counts = {t: store.count(t) for t in ("items", "predictions", "routes")}
        distinct = int(store._scalar("SELECT count(DISTINCT id) FROM items") or 0)
        sent = {str(r["key"]) for r in store._rows("SELECT key FROM outbox WHERE state = 'sent'")}
        stuck = int(store._scalar("SELECT count(*) FROM outbox WHERE state = 'sending'") or 0)
    lost = sum(max(0, n - c) for c in counts.values()) + stuck
    duplicates = counts["items"] - distinct
    if sink is not None:
        posted = sink.keys()
        duplicates += sum(c - 1 for c in posted.values() if c > 1)
        lost += len(sent - set(posted))
    return duplicates, lost


@contextlib.contextmanager
def server_for(database: str) -> Iterator[Callable[[str], str]]:
    """A way to make fresh databases: on the given server, or on a throwaway one (``postgres``)."""
    from triage import pgserver

    with pgserver.running(
        None if database == "postgres" else database,
        durable=True,
        settings={"max_connections": "50"},
    ) as server:
        yield server.create_database


def run_scale_bench(
    n: int, workers: int, database: str, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the three PostgreSQL runs and the DuckDB reference; return the report."""
    from triage.store import location

    work = Path(tempfile.mkdtemp(prefix="triage-scale-"))
    sink = RecordingSink({dest: "C" + dest.upper() for dest in DESTINATIONS})
    sink.start()
    try:
        data = work / "data"
        generate(data, n)
        config_path = write_config(data, work / "unused.duckdb")
        base_env = {**os.environ, "BENCH_SLACK_TOKEN": sink.token, "SLACK_API_URL": sink.url}
        base_env["TRIAGE_OUTBOX_DIR"] = str(work / "outbox")
        report: dict[str, Any] = {"n": n, "workers": workers, "cpu_count": os.cpu_count()}
        duplicates = lost = 0

        duck = str(work / "bench.duckdb")
        log(f"DuckDB file, 1 worker, {n:,} mentions ...")
        seconds, _ = timed_run(config_path, {**base_env, "TRIAGE_DB": duck}, 1)
        report["duckdb_per_s"] = round(n / seconds, 1)
        d, lost_ = check(duck, n)
        duplicates, lost = duplicates + d, lost + lost_
        with server_for(database) as fresh:
            for label, count in (("one_worker", 1), ("workers", workers)):
                url = fresh(f"bench_{label}")
                log(f"PostgreSQL ({location.shown(url)}), {count} worker(s) ...")
                seconds, did = timed_run(config_path, {**base_env, "TRIAGE_DB": url}, count)
                report[f"worker_{label}"] = did
                # Work done twice shows as more items classified or routed than there are.
                for stage in ("classified", "routed"):
                    duplicates += max(0, sum(w.get(stage, 0) for w in did) - n)
                report[f"per_s_{label}"] = round(n / seconds, 1)
                report[f"seconds_{label}"] = round(seconds, 2)
                d, lost_ = check(url, n)
                duplicates, lost = duplicates + d, lost + lost_
            url = fresh("bench_kill")
            log(f"PostgreSQL, {workers} workers, one killed (kill -9) and restarted, twice ...")
            killed = kill_run(config_path, {**base_env, "TRIAGE_DB": url}, url, n, workers, sink)
            d, lost_ = check(url, n, sink)
            duplicates, lost = duplicates + d, lost + lost_
            report["kill_run"] = {**killed, "delivered": sum(sink.keys().values())}
        report["speedup"] = round(report["per_s_workers"] / report["per_s_one_worker"], 3)
        report["pg_vs_duckdb"] = round(report["per_s_one_worker"] / report["duckdb_per_s"], 3)
        log(f"the machine's ceiling: the bare classifier in 1, then {workers} processes ...")
        report["classifier_parallel_ceiling"] = classifier_ceiling(workers)
        report["duplicates"] = duplicates
        report["lost"] = lost
        return report
    finally:
        sink.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def classifier_rate(texts: int = 12_000) -> None:
    """Print this process's bare ``nlp.pipe`` rate over starter texts (one line)."""
    from classifiers.data import load_starter
    from classifiers.model import PIPE_BATCH
    from flows.triage import _classifier

    nlp = _classifier(None).nlp
    corpus = [ex.text for ex in load_starter()]
    sample = (corpus * (texts // max(1, len(corpus)) + 1))[:texts]
    for _ in nlp.pipe(sample[:2000], batch_size=PIPE_BATCH):
        pass
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for _ in nlp.pipe(sample, batch_size=PIPE_BATCH):
        pass
    print(round(texts / (time.perf_counter() - started), 1), flush=True)


def classifier_ceiling(count: int) -> float:
    """How much faster ``count`` bare-classifier processes are than one, on this machine now.

    The most any pipeline could gain from ``count`` workers here: on a machine whose other core
    is busy with someone else's work it is near 1, whatever the store does.
    """
    rates = []
    for procs in (1, count):
        started = spawn(
            [sys.executable, "-m", "triage.cli.bench_scale", "--classifier"], None, procs
        )
        Workers.go(started)
        rates.append(sum(float(p.communicate()[0].strip() or 0) for p in started))
    return round(rates[1] / rates[0], 3) if rates[0] else 0.0


def render_scale(report: dict[str, Any]) -> str:
    """The scale-out report as a few lines."""
    rows = [
        ("mentions", f"{report['n']:,}"),
        ("DuckDB file, 1 worker", f"{report['duckdb_per_s']:,.0f} mentions/s"),
        ("PostgreSQL, 1 worker", f"{report['per_s_one_worker']:,.0f} mentions/s"),
        (f"PostgreSQL, {report['workers']} workers", f"{report['per_s_workers']:,.0f} mentions/s"),
        ("speed-up", f"{report['speedup']:.2f}x"),
        ("machine ceiling (bare classifier)", f"{report['classifier_parallel_ceiling']:.2f}x"),
        ("PostgreSQL / DuckDB (1 worker)", f"{report['pg_vs_duckdb']:.2f}"),
        ("kill run", f"{report['kill_run']['kills']} workers killed and restarted"),
        ("duplicates / lost", f"{report['duplicates']} / {report['lost']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _stop_on_term() -> None:
    # A worker stopped by the bench's clean-up exits at once, like a killed flow run.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))


if __name__ == "__main__":
    _stop_on_term()
    threading.current_thread().name = "bench-worker"
    if sys.argv[1] == "--classifier":
        classifier_rate()
    else:
        worker(sys.argv[1], int(sys.argv[2]))
