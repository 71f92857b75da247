"""The intake on a PostgreSQL store: posts written directly, the spool as the fallback.

A real server (``tests/pg_fixture.py``), real HTTP to the intake through httpx, the real flow.
A TCP relay in front of the server (:class:`Gate`) takes it down, makes it silent and brings it
back without touching the server the other tests share. The direct writer's pause runs on an
injected clock.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml

from connectors import SourceContext, webhook
from flows.settings import load_config
from flows.triage import classify_pending, ingest, route_pending, triage
from tests.clirun import BIN, clean_env
from tests.conftest import DEMO_DIR
from tests.pg_gate import Gate
from triage.servers.intake import IntakeSettings, make_server, sign, spool_line
from triage.servers.intake_store import DirectWriter, direct_writer
from triage.store import open_store

SECRET = "direct-intake-secret-51a0"
SOURCE = "web-form"


# ----------------------------------------------------------------------------- helpers
def write_config(
    tmp_path: Path,
    database: str,
    extra: list[dict[str, Any]] | None = None,
    **webhook_settings: Any,
) -> Path:
    """The demo's routing, departments and destinations with a webhook source (its settings
    plus ``webhook_settings``) and the ``extra`` sources."""
    data = yaml.safe_load((DEMO_DIR / "triage.yaml").read_text())
    data.pop("customers")
    data["database"] = database
    webhook = {"name": SOURCE, "type": "webhook", "spool_dir": str(tmp_path / "spool")}
    data["sources"] = [{**webhook, **webhook_settings}, *(extra or [])]
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def signed_post(base: str, payload: dict[str, Any], ts: int) -> httpx.Response:
    """POST a signed JSON body to ``<base>/intake``, as a form's backend does."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Triage-Timestamp": str(ts),
        "X-Triage-Signature": sign(SECRET, str(ts), body),
    }
    return httpx.post(f"{base}/intake", content=body, headers=headers, timeout=30)


class Intake:
    """An intake server on a random port, with the direct writer of ``database``."""

    def __init__(
        self, tmp_path: Path, database: str, *, request_timeout: float = 5.0, **writer: Any
    ) -> None:
        self.config = load_config(write_config(tmp_path, database))
        self.spool = tmp_path / "spool"
        self.now = time.time()
        self.mono = [0.0]
        source = next(s for s in self.config.sources if s.name == SOURCE)
        ctx = SourceContext(source.name, source.settings, self.config.path.parent)
        self.writer = DirectWriter(database, ctx, clock=lambda: self.mono[0], **writer)
        self.writer.warm_up()
        settings = IntakeSettings(
            secret=SECRET,
            spool_dir=self.spool,
            clock=lambda: self.now,
            request_timeout=request_timeout,
            direct=self.writer,
        )
        self.server = make_server(settings, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def post(self, payload: dict[str, Any], ts: int | None = None) -> httpx.Response:
        return signed_post(self.base, payload, ts if ts is not None else int(self.now))

    def spooled(self) -> list[dict[str, Any]]:
        lines = b"".join(p.read_bytes() for p in sorted(self.spool.glob("intake-*.jsonl")))
        return [json.loads(line) for line in lines.splitlines()]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the test's folder: a run on a server store keeps its review spool (and its lock
    file) in the working folder, ``./triage-<dbname>.decisions.jsonl``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def migrated(pg_url: str) -> str:
    """The test's database with the schema in place (the first open migrates)."""
    with open_store(pg_url):
        pass
    return pg_url


@pytest.fixture
def intake_on(tmp_path: Path) -> Iterator[Callable[..., Intake]]:
    started: list[Intake] = []

    def start(database: str, **kwargs: Any) -> Intake:
        started.append(Intake(tmp_path, database, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def items(url: str, source: str = SOURCE) -> dict[str, str]:
    """External id -> text of the source's items."""
    with open_store(url) as store:
        rows = store._rows("SELECT external_id, text FROM items WHERE source = ?", [source])
    return {str(r["external_id"]): str(r["text"]) for r in rows}


def timed(fn: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = fn()
    return response, time.monotonic() - started


# ----------------------------------------------------------------------------- the item itself
def test_a_post_stored_directly_is_the_item_the_spool_would_give(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    ctx = SourceContext(
        SOURCE, {"spool_dir": str(spool), "max_record_bytes": 1024}, base_dir=tmp_path
    )
    received = datetime(2026, 3, 1, 12, tzinfo=UTC)
    good = {
        "id": "f-1",
        "text": "The export button does nothing",
        "email": "amy@example.com",
        "channel": None,  # empty: the source's source_type applies
        "received_at": received.isoformat(),
        "created_at": received.isoformat(),
    }
    no_text = {"id": "f-2", "name": "Bo"}  # refused at the door; quarantined if it got past it
    long = {"id": "f-3", "text": "x" * 2000}  # over this source's max_record_bytes
    lines = [spool_line(r) for r in (good, no_text, long)]
    (spool / "intake-20260301.jsonl").write_bytes(b"".join(lines))
    (from_spool,) = list(webhook.fetch(ctx, None))

    direct = [
        webhook.post_batch(ctx, line, received, str(r["id"]))
        for line, r in zip(lines, (good, no_text, long), strict=True)
    ]
    table = pa.concat_tables([b.items for b in direct if b.items is not None])
    assert from_spool.items is not None
    fetched = pa.array([received] * from_spool.items.num_rows, pa.timestamp("us", tz="UTC"))
    spool_rows = from_spool.items.set_column(
        from_spool.items.schema.get_field_index("fetched_at"), "fetched_at", fetched
    )
    # The same rows (id, fields, raw line, source_type), only fetched_at is the receive time.
    assert table.to_pylist() == spool_rows.to_pylist()
    assert table.column("source_type").to_pylist() == ["web_form"]
    # The same quarantine, a post named where the spool names its file and line.
    rejected = [r for b in direct for r in b.rejected]
    spool_reasons = [r.reason for r in from_spool.rejected]
    for n in (2, 3):
        spool_reasons = [
            r.replace(f"intake-20260301.jsonl line {n}:", f"intake post f-{n}:")
            for r in spool_reasons
        ]
    assert sorted(r.reason for r in rejected) == sorted(spool_reasons)
    assert sorted(r.raw for r in rejected) == sorted(r.raw for r in from_spool.rejected)
    assert "text is missing" in rejected[0].reason
    assert "over max_record_bytes" in rejected[1].reason


def test_only_a_server_store_with_a_webhook_source_on_the_spool_is_written_directly(
    tmp_path: Path, pg_url: str
) -> None:
    spool = tmp_path / "spool"
    on_pg = load_config(write_config(tmp_path, pg_url))
    writer = direct_writer(on_pg, spool)
    assert writer is not None and writer.source.name == SOURCE
    writer.close()
    # The DuckDB file admits one writing process (a flow run): the intake spools, as before.
    assert (
        direct_writer(load_config(write_config(tmp_path, str(tmp_path / "t.duckdb"))), spool)
        is None
    )
    # No enabled source reads this folder: the posts' source is unknown, so they are spooled.
    assert direct_writer(on_pg, tmp_path / "elsewhere") is None


@contextmanager
def intake_command(tmp_path: Path, *args: str) -> Iterator[tuple[str, str]]:
    """``triage intake serve --spool-dir spool ARGS`` as users start it, in ``tmp_path``; yields
    its base URL and its banner line, and stops it afterwards."""
    proc = subprocess.Popen(
        [str(BIN / "triage"), "intake", "serve", "--port", "0", "--spool-dir", "spool", *args],
        cwd=tmp_path,
        env=clean_env(TRIAGE_INTAKE_SECRET=SECRET, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        port = re.search(r"127\.0\.0\.1:(\d+)/intake", banner)
        assert port is not None, banner
        yield f"http://127.0.0.1:{port.group(1)}", banner
    finally:
        proc.terminate()
        proc.wait(30)


def test_intake_serve_writes_to_the_configured_postgres_store(
    tmp_path: Path, migrated: str
) -> None:
    # The command as users start it: the database from --db, the source from the configuration.
    config = write_config(tmp_path, str(tmp_path / "unused.duckdb"))
    with intake_command(tmp_path, "--config", str(config), "--db", migrated) as (base, banner):
        assert f"as source '{SOURCE}'" in banner and "***" in banner, banner
        post = {"id": "cli-1", "text": "Sync stopped working"}
        answer = signed_post(base, post, int(time.time()))
        assert answer.status_code == 202
        assert items(migrated) == {"cli-1": "Sync stopped working"}
        assert not list((tmp_path / "spool").glob("intake-*.jsonl"))


def test_intake_serve_refuses_posts_longer_than_its_sources_max_record_bytes(
    tmp_path: Path,
) -> None:
    # On the file store (every post spooled): the webhook source reading the spool takes lines
    # of at most 2,048 bytes, so the server refuses longer posts instead of spooling what the
    # source would quarantine unread.
    config = write_config(tmp_path, str(tmp_path / "t.duckdb"), max_record_bytes=2048)
    with intake_command(tmp_path, "--config", str(config)) as (base, _):
        now = int(time.time())
        long = signed_post(base, {"id": "long", "text": "x" * 2100}, now)
        assert long.status_code == 413
        assert "max_record_bytes, 2048" in long.json()["error"]
        short = signed_post(base, {"id": "short", "text": "x" * 1900}, now)
        assert short.status_code == 202
    spooled = (tmp_path / "spool").glob("intake-*.jsonl")
    assert [json.loads(line)["id"] for p in spooled for line in p.read_text().splitlines()] == [
        "short"
    ]
    # What the server took, the source reads: nothing quarantined.
    summary = triage(config_path=str(config), deliver=False)
    assert summary["sources"][SOURCE]["stored"] == 1
    assert summary["sources"][SOURCE]["quarantined"] == 0


# ----------------------------------------------------------------------------- direct path
def test_a_post_is_stored_directly_once_and_the_flow_classifies_and_routes_it_once(
    migrated: str, intake_on: Callable[..., Intake]
) -> None:
    intake = intake_on(migrated)
    post = {
        "id": "f-1",
        "text": "Your app crashes when I upload a photo",
        "email": "amy@example.com",
    }
    first = intake.post(post)
    assert first.status_code == 202 and first.json() == {"status": "accepted", "id": "f-1"}
    assert items(migrated) == {"f-1": post["text"]}
    assert intake.spooled() == []
    # The same signed post again (a retried delivery), and a post without an id replayed.
    assert intake.post(post).status_code == 202
    anon = {"text": "Do you have a team plan?", "name": "Lee"}
    stamp = int(intake.now)
    ids = {intake.post(anon, ts=stamp).json()["id"] for _ in range(2)}
    assert len(ids) == 1
    assert sorted(items(migrated)) == sorted(["f-1", *ids])
    assert (intake.writer.written, intake.writer.spooled) == (4, 0)

    summary = triage(config_path=str(intake.config.path), database=migrated)
    # Nothing to fetch (nothing was spooled); the items are classified, routed and delivered.
    assert summary["sources"][SOURCE]["fetched"] == 0
    assert summary["classify"]["classified"] == 2
    assert summary["route"]["routed"] == 2
    assert summary["deliver"]["previewed"] >= 2
    again = triage(config_path=str(intake.config.path), database=migrated)
    assert again["classify"]["classified"] == 0 and again["route"]["routed"] == 0
    with open_store(migrated) as store:
        assert store.count("predictions") == 2
        assert store.count("routes") == 2
        label = store._scalar(
            "SELECT p.label FROM predictions p JOIN items i ON i.id = p.item_id "
            "WHERE i.external_id = 'f-1'"
        )
        # Stored as the source stores it: the item's stored form has its language detected.
        language = store._scalar("SELECT language FROM items WHERE external_id = 'f-1'")
    assert label == "service_issue"
    assert language == "en"


# ----------------------------------------------------------------------------- fallback
def test_posts_are_spooled_in_time_while_the_server_is_down_and_read_once_it_is_back(
    migrated: str, intake_on: Callable[..., Intake]
) -> None:
    gate = Gate(migrated)
    try:
        intake = intake_on(gate.url, request_timeout=5.0, wait_s=2.0, pause_s=30.0)
        gate.mode = "down"
        down = {"id": "down-1", "text": "Checkout fails with error 500"}
        answer, took = timed(lambda: intake.post(down))
        assert answer.status_code == 202
        # Within the request deadline: the write gave up, the post was fsynced to the spool.
        assert took < 5.0
        assert [r["id"] for r in intake.spooled()] == ["down-1"]
        # While paused, posts go straight to the spool: no connection attempt each.
        tried = gate.accepted
        assert intake.post({"id": "down-2", "text": "Love the new editor"}).status_code == 202
        assert gate.accepted == tried
        assert [r["id"] for r in intake.spooled()] == ["down-1", "down-2"]

        # The server is back; once the pause is over the intake writes directly again.
        gate.mode = "open"
        intake.mono[0] += 31.0
        assert intake.post({"id": "up-1", "text": "Is there an annual plan?"}).status_code == 202
        # down-1's sender retries: now it is stored directly, and its spooled copy is the same item.
        assert intake.post(down).status_code == 202
        assert len(intake.spooled()) == 2
        assert sorted(items(migrated)) == ["down-1", "up-1"]
        assert (intake.writer.written, intake.writer.spooled) == (2, 2)
    finally:
        gate.close()

    summary = triage(config_path=str(intake.config.path), database=migrated, deliver=False)
    # The spool holds two posts; one of them was stored meanwhile: one new item.
    assert summary["sources"][SOURCE]["fetched"] == 2
    assert summary["sources"][SOURCE]["stored"] == 1
    assert sorted(items(migrated)) == ["down-1", "down-2", "up-1"]
    assert summary["classify"]["classified"] == 3
    again = triage(config_path=str(intake.config.path), database=migrated, deliver=False)
    assert again["sources"][SOURCE]["fetched"] == 0


def test_a_silent_server_costs_a_post_its_wait_not_its_answer(
    migrated: str, intake_on: Callable[..., Intake]
) -> None:
    gate = Gate(migrated)
    try:
        intake = intake_on(gate.url, request_timeout=5.0, wait_s=0.5)
        gate.mode = "silent"  # accepts the connection and never says a word
        answer, took = timed(lambda: intake.post({"id": "s-1", "text": "Where is my invoice?"}))
        assert answer.status_code == 202
        assert took < 5.0
        assert [r["id"] for r in intake.spooled()] == ["s-1"]
        assert intake.writer.spooled == 1
    finally:
        gate.close()
    summary = triage(config_path=str(intake.config.path), database=migrated, deliver=False)
    assert summary["sources"][SOURCE]["stored"] == 1
    assert items(migrated) == {"s-1": "Where is my invoice?"}


# ----------------------------------------------------------------------------- concurrency
def test_concurrent_posts_while_a_run_writes_lose_nothing_and_double_nothing(
    migrated: str, intake_on: Callable[..., Intake], tmp_path: Path
) -> None:
    # Another source's backlog, stored, classified and routed by a run while the posts arrive.
    drop = tmp_path / "drop.jsonl"
    stamp = datetime.now(UTC).isoformat()
    drop.write_text(
        "".join(
            json.dumps({"id": f"b{n}", "text": f"Sync fails on device {n}", "created_at": stamp})
            + "\n"
            for n in range(1500)
        )
    )
    intake = intake_on(migrated)
    config_path = write_config(
        tmp_path, migrated, [{"name": "backlog", "type": "file", "path": str(drop)}]
    )
    config = load_config(config_path)
    backlog = next(s for s in config.sources if s.name == "backlog")
    run_done = threading.Event()
    run: dict[str, Any] = {}

    def worker() -> None:
        try:
            run["ingest"] = ingest(config, backlog, batch_size=250)
            run["classify"] = classify_pending(config, batch_size=250)
            run["route"] = route_pending(config)
        finally:
            run_done.set()

    threads, answers = 6, 10
    codes: list[int] = []
    overlapped: list[bool] = []
    lock = threading.Lock()

    def poster(t: int) -> None:
        # The same post delivered by every thread at once (a client retrying in parallel), then
        # each thread's own posts.
        posts = [{"id": "shared", "text": "Posted by every thread"}]
        posts += [{"id": f"p{t}-{n}", "text": f"Post {n} from form {t}"} for n in range(answers)]
        for post in posts:
            answer = intake.post(post)
            with lock:
                codes.append(answer.status_code)
                overlapped.append(not run_done.is_set())

    runner = threading.Thread(target=worker)
    runner.start()
    posters = [threading.Thread(target=poster, args=(t,)) for t in range(threads)]
    for p in posters:
        p.start()
    for p in posters:
        p.join()
    runner.join()
    assert codes == [202] * (threads * (answers + 1))
    assert any(overlapped), "the run finished before the posts could overlap it"
    expected = {"shared"} | {f"p{t}-{n}" for t in range(threads) for n in range(answers)}
    spooled = {r["id"] for r in intake.spooled()}
    # Each post went one way: stored at once, or spooled (a write slower than its wait).
    assert intake.writer.written + intake.writer.spooled == len(codes)
    assert set(items(migrated)) | spooled == expected

    summary = triage(config_path=str(config_path), database=migrated, deliver=False)
    assert set(items(migrated)) == expected
    # The run reads what was spooled; a spooled post whose late write committed anyway is absorbed.
    assert summary["sources"][SOURCE]["fetched"] == len(spooled)
    assert summary["sources"][SOURCE]["stored"] <= len(spooled)
    with open_store(migrated) as store:
        total = store.count("items")
        assert total == 1500 + len(expected)
        # Every item classified once and routed once, whichever run or path it came by.
        assert store.count("predictions") == total
        assert store.count("routes") == total
        assert store._scalar(
            "SELECT count(DISTINCT text) FROM items WHERE source = ?", [SOURCE]
        ) == len(expected)
    assert run["ingest"]["stored"] == 1500
