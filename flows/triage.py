"""The triage flow: fetch every source, store, classify, route and deliver, in a handful of batch tasks."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from classifiers.adapt import LEARNED, StreamMix, adapt_streams, adapts_by_content
from classifiers.model import Classifier, decide_columns, one_blas_thread
from connectors import SourceContext, get_connector
from flows.drift import watch_drift
from flows.learning import active_model
from flows.progress import Event, Stage, emit
from flows.settings import load_config, settings_at_run_time
from triage.config import Config, SourceConfig
from triage.delivery import drain
from triage.destinations import after_drain, build_destinations
from triage.models import LABELS
from triage.privacy.language import release_shared
from triage.privacy.retention import expire_personal_data
from triage.privacy.routing import flag_languages, route_languages
from triage.review import process_pending
from triage.routing import route_batch
from triage.secrets import get_secret
from triage.store import Store, StoreError, location, open_store

log = logging.getLogger("triage")


class BackgroundWriter:
    """Run store writes one at a time in a background thread, at most one in flight.

    DuckDB releases the GIL while it executes, so a batch is stored on the second core while the
    next one is computed. The writer has its own connection (a cursor of the store's database);
    each write commits on its own, exactly as it would inline, and a failed write is raised by the
    next :meth:`submit` or on exit.

    A store whose reads claim their batches (PostgreSQL, ``claims_work``) is written inline: the
    batch's results must commit in the claiming transaction, and the server does the work in its
    own process anyway.
    """

    def __init__(self, store: Store) -> None:
        """Prepare a writer next to ``store`` (use it as a context manager)."""
        self._inline = store.claims_work
        self._store = store if self._inline else store.writer()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-writer")
        self._pending: Future[Any] | None = None

    def submit(self, method: str, *args: Any) -> None:
        """Wait for the previous write, then start ``store.<method>(*args)`` in the background.

        The method is named, not passed, so each backend's own version of it runs.
        """
        self.wait()
        write: Callable[..., Any] = getattr(self._store, method)
        if self._inline:
            write(*args)
            return
        self._pending = self._pool.submit(write, *args)

    def wait(self) -> None:
        """Wait for the write in flight, raising its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> Self:
        """Start using the writer."""
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Finish the write in flight (even after an error, so nothing is left half-done)."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            if not self._inline:
                self._store.close()


@lru_cache(maxsize=4)
def _classifier(path: str | None) -> Classifier:
    # Loading a spaCy pipeline costs a second or so; scheduled runs in one worker reuse it.
    return Classifier.load(path)


def classifier_for(config: Config) -> Classifier:
    """The active model (README, "Learning from corrections"), with the config's thresholds.

    The registry's pointer is read on every call and the cache is keyed by the model's folder,
    so a promotion or rollback applies to the next run of a long-lived worker.
    """
    clf = _classifier(str(active_model(config).path))
    if (
        config.thresholds
        or config.margin is not None
        or config.service_watch is not None
        or not config.adapt_to_source
    ):
        clf = clf.with_overrides(
            config.thresholds, config.margin, config.service_watch, adapt=config.adapt_to_source
        )
    return clf


def finished(stage: Stage, started: float, **counts: Any) -> float:
    """Report a stage's end (with its counts) to the progress display; return its seconds."""
    seconds = round(time.monotonic() - started, 3)
    emit(Event(stage, "finish", seconds=seconds, **counts))
    return seconds


def ingest(config: Config, source: SourceConfig, batch_size: int = 5000) -> dict[str, Any]:
    """Fetch one source from its stored cursor and store each batch with the advanced cursor.

    Returns:
        ``{"fetched", "stored", "quarantined", "seconds", "notes"}`` for the summary; ``notes``
        are what the connector said about this fetch (a drop file whose end waits for its
        writer), each once.
    """
    started = time.monotonic()
    connector = get_connector(source.type)
    ctx = SourceContext(
        name=source.name,
        settings=source.settings,
        base_dir=config.path.parent,
        batch_size=batch_size,
        secret=lambda name: get_secret(name, name.lower().replace("_", "-")),
    )
    fetched = stored = quarantined = 0
    notes: list[str] = []
    emit(Event("fetch", "start", source=source.name))
    with (
        open_store(config.database, streaming=True) as store,
        store.source_lease(source.name) as mine,
    ):
        if not mine:
            # Another run (another worker) is fetching this source right now: its batches and
            # cursor are its own; fetching the same pages again would only repeat them.
            emit(Event("fetch", "finish", source=source.name, done=0, new=0))
            return {
                "fetched": 0,
                "stored": 0,
                "quarantined": 0,
                "seconds": 0.0,
                "notes": [],
                "leased": False,
            }
        cursor = store.get_cursor(source.name)
        for n, batch in enumerate(connector.fetch(ctx, cursor), start=1):
            new_items = new_q = 0
            # A batch that only carries a note (a drop file still waiting for its writer) has
            # nothing to store: no transaction for it on every scheduled run.
            if batch.size or batch.cursor != cursor:
                new_items, new_q = store.ingest(
                    source.name, batch.mentions, batch.rejected, batch.cursor, items=batch.items
                )
                cursor = batch.cursor
            fetched += batch.size
            stored += new_items
            quarantined += new_q
            for note in batch.notes:
                if note not in notes:
                    notes.append(note)
                    log.info("source %s: %s", source.name, note)
            emit(Event("fetch", "batch", source=source.name, batch=n, done=fetched, new=stored))
    seconds = finished("fetch", started, done=fetched, source=source.name, new=stored)
    return {
        "fetched": fetched,
        "stored": stored,
        "quarantined": quarantined,
        "seconds": seconds,
        "notes": notes,
    }


def prediction_table(
    ids: pa.Array | pa.ChunkedArray, scores: np.ndarray, clf: Classifier, now: datetime
) -> pa.Table:
    """Build the rows of :meth:`Store.insert_predictions` for one batch, column by column.

    Args:
        ids: The items' ids, in the order of ``scores``.
        scores: Calibrated (n, labels) scores from :meth:`Classifier.scores`.
        clf: The classifier (its decision policy and version).
        now: The ``classified_at`` time of the batch.

    Returns:
        An Arrow table with the ``predictions`` columns, ``scores`` as one column per label.
    """
    d = decide_columns(scores, clf.policy)
    n = len(scores)
    # Arrow take() over the few distinct labels, label lists and reasons: no Python loop per row.
    columns: dict[str, Any] = {
        "item_id": ids,
        "label": pa.array(LABELS, pa.string()).take(d.primary),
        "labels": pa.array(d.label_sets, pa.list_(pa.string())).take(d.label_set),
        "score": pa.array(scores[np.arange(n), d.primary], pa.float64()),
        "needs_review": pa.array(d.needs_review, pa.bool_()),
        "review_reason": pa.array(d.reasons, pa.string()).take(d.reason),
        "model_version": pa.array([clf.version] * n, pa.string()),
        "classified_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }
    for j, label in enumerate(LABELS):
        columns[f"score_{label}"] = pa.array(scores[:, j], pa.float64())
    return pa.table(columns)


class SourceMixes:
    """Scores adapted to each source's label mix over one classify run (:mod:`classifiers.adapt`).

    The first batch that brings a source reads its latest ``window`` classified items from the
    store and scores them (not adapted, not stored); after each batch, its own scores (and
    texts) join that history, so the later batches of a long backlog see the source's items so
    far without reading the store again. With ``by_content`` each new item adapts to the mix of
    the :data:`~classifiers.neighbours.NEIGHBOURS` items of its source, history included, that
    read most like it, as ``triage classify`` adapts a file; otherwise to the source's one mix.
    A source the model learned is left as it is, so its history is neither read nor kept.
    """

    def __init__(self, clf: Classifier, store: Store, window: int, by_content: bool) -> None:
        """Adapt with ``clf``'s policy, reading history from ``store``."""
        self._clf = clf
        self._store = store
        self._window = window
        self._by_content = by_content
        self._history: dict[str, np.ndarray] = {}
        self._texts: dict[str, list[str]] = {}
        self.mixes: dict[str, StreamMix] = {}
        """What was done for each source, as of its latest batch."""

    def scores(self, texts: list[str], sources: list[str]) -> np.ndarray:
        """Calibrated scores of the batch, each source's adapted to its label mix."""
        plain = self._clf.scores(texts)
        settings = self._clf.policy.adaptation
        if settings is None:
            return plain
        new = [
            s for s in dict.fromkeys(sources) if s not in self._history and not settings.learns(s)
        ]
        if new:
            past = {s: self._store.recent_texts(s, self._window) for s in new}
            scored = self._clf.history_scores(past)
            for s in new:
                self._history[s] = scored.get(s, np.empty((0, plain.shape[1])))
                # Texts are kept only to find neighbours among; one mix needs the scores alone.
                self._texts[s] = past[s] if s in scored and self._by_content else []
        adapted, report = adapt_streams(
            plain,
            sources,
            settings,
            self._history,
            texts=texts,
            by_content=self._by_content,
            history_texts=self._texts,
        )
        self.mixes.update(report)
        of = np.array(sources, dtype=object)
        for key, done in report.items():
            if done.reason == LEARNED:
                continue
            # The batch before the older history; the window bounds memory.
            mine = of == key
            self._history[key] = np.vstack([plain[mine], self._history[key]])[: self._window]
            if self._by_content:
                batch = [t for t, m in zip(texts, mine, strict=True) if m]
                self._texts[key] = (batch + self._texts[key])[: self._window]
        return adapted


def classify_pending(config: Config, batch_size: int = 5000) -> dict[str, Any]:
    """Classify every stored item that has no prediction yet, batch by batch with ``nlp.pipe``.

    Each source's scores adapt to its label mix (:class:`SourceMixes`) unless the configuration
    says ``classification.adapt_to_source: false`` or the model does not adapt.
    """
    started = time.monotonic()
    clf = classifier_for(config)
    by_label: Counter[str] = Counter()
    needs_review = 0
    emit(Event("classify", "start"))
    with open_store(config.database, streaming=True) as store:
        mixes = SourceMixes(
            clf, store, config.adapt_history, by_content=adapts_by_content(config.adapt_to)
        )
        with BackgroundWriter(store) as writer:
            for n, batch in enumerate(store.unclassified(batch_size), start=1):
                scores = mixes.scores(
                    batch.column("text").to_pylist(), batch.column("source").to_pylist()
                )
                table = prediction_table(batch.column("id"), scores, clf, datetime.now(UTC))
                # Languages the model was not trained on are flagged for review, with the reason.
                table = flag_languages(
                    table, batch.column("language").to_pylist(), config.privacy
                )
                # Stored while the next batch is classified; one batch in flight keeps memory
                # flat.
                writer.submit("insert_predictions", table)
                by_label.update(table.column("label").to_pylist())
                needs_review += pc.sum(table.column("needs_review")).as_py() or 0
                emit(Event("classify", "batch", batch=n, done=by_label.total()))
        # After the writer has committed every batch: the floor only covers stored results.
        store.advance_floor("classify")
    seconds = finished("classify", started, done=by_label.total())
    return {
        "classified": by_label.total(),
        "by_label": dict(sorted(by_label.items())),
        "needs_review": needs_review,
        "model_version": clf.version,
        # Sources whose scores were adapted to their label mix in this run.
        "adapted_sources": sorted(k for k, v in mixes.mixes.items() if v.mix is not None),
        # How: each item to the items of its source most like it, or each source to one mix.
        "adapted_by": next((v.reason for v in mixes.mixes.values() if v.mix is not None), None),
        # Sources left as they are because the model learned a source of that name: intended
        # for a source whose corrections it trained on, a surprise for one that happens to be
        # named like a training file (``kudos``), so the summary says so.
        "learned_sources": sorted(k for k, v in mixes.mixes.items() if v.reason == LEARNED),
        "seconds": seconds,
    }


def route_pending(config: Config, batch_size: int = 20_000) -> dict[str, Any]:
    """Route every classified, unrouted item and enqueue its deliveries in the outbox."""
    started = time.monotonic()
    by_department: Counter[str] = Counter()
    enqueued = 0
    emit(Event("route", "start"))
    with open_store(config.database) as store:
        with BackgroundWriter(store) as writer:
            for n, batch in enumerate(store.unrouted(batch_size), start=1):
                routes, outbox = route_languages(config, batch, *route_batch(config, batch))
                # Routes and their deliveries still commit together, in the writer's transaction.
                writer.submit("insert_routes", routes, outbox)
                by_department.update(
                    d or "none" for d in routes.column("department").to_pylist()
                )
                enqueued += outbox.num_rows
                emit(Event("route", "batch", batch=n, done=by_department.total()))
        store.advance_floor("route")
    seconds = finished("route", started, done=by_department.total())
    return {
        "routed": by_department.total(),
        "by_department": dict(sorted(by_department.items())),
        "enqueued": enqueued,
        "seconds": seconds,
    }


def deliver_pending(config: Config, limit: int = 10_000) -> dict[str, Any]:
    """Drain the outbox to every destination (or JSON previews when no token is configured)."""
    started = time.monotonic()
    emit(Event("deliver", "start"))
    destinations = build_destinations(config)
    with open_store(config.database) as store:
        report = drain(store, config, destinations, limit=limit)
        # Thread notes that waited for their review message, then dead-letter alerts.
        after_drain(store, config, destinations)
    # Only destinations that wrote a preview in this drain: nothing previewed, no preview note.
    previews = sorted(report.previewed_by)
    done = report.as_dict()
    seconds = finished("deliver", started, done=done["sent"] + done["previewed"])
    return {
        **done,
        "preview_destinations": previews,
        "outbox_dir": str(config.outbox_dir) if previews else None,
        "failures": report.failures,
        "seconds": seconds,
    }


def _stage(fn: Callable[..., Any], name: str, run_name: str | None = None, **options: Any) -> Any:
    # Thin Prefect wrappers: no caching (inputs are live configuration), retries only where I/O
    # is, and task runs named after what they do rather than with a hash suffix.
    return task(name=name, task_run_name=run_name or name, cache_policy=NO_CACHE, **options)(fn)


# Each source's task run is named after it (fetch-and-store[reddit-brand]): a failure is found at
# a glance in the UI.
ingest_task = _stage(
    ingest,
    "fetch-and-store",
    "fetch-and-store[{source.name}]",
    retries=2,
    retry_delay_seconds=[2, 5],
)
classify_task = _stage(classify_pending, "classify")
route_task = _stage(route_pending, "route")
review_task = _stage(process_pending, "apply-review-decisions")
deliver_task = _stage(deliver_pending, "deliver", retries=2, retry_delay_seconds=[5, 15])
drift_task = _stage(watch_drift, "drift-watch")
retention_task = _stage(expire_personal_data, "retention")


class SourcesFailed(Exception):
    """Some sources failed after their retries; the others were fetched, classified and delivered.

    It is the result of the run's Failed state, so the run shows red in Prefect with a message
    naming the sources, and carries the run's summary for whoever called the flow.
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        """Keep the message and the summary (both in ``args``, so the exception pickles)."""
        super().__init__(message, summary)
        self.summary = summary

    def __str__(self) -> str:
        """The message alone."""
        return str(self.args[0])


def failure_message(failures: dict[str, str], total: int) -> str:
    """``2 of 6 sources failed: reddit-brand (ConnectorError: …); x (…)``."""
    parts = "; ".join(f"{name} ({err[:300]})" for name, err in failures.items())
    return f"{len(failures)} of {total} sources failed: {parts}"


def _drift(config: Config) -> dict[str, Any]:
    """The drift watch; its failure (e.g. Slack down) is reported, never fails the run."""
    try:
        result: dict[str, Any] = drift_task(config)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - alerts are retried by the next run
        log.warning("drift watch failed: %s: %s", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return result


@flow(name="triage", log_prints=True)
def triage(
    config_path: str | None = None,
    database: str | None = None,
    deliver: bool = True,
    batch_size: int = 5000,
) -> dict[str, Any]:
    """Run one triage pass over every enabled source.

    Args:
        config_path: The configuration file (default: ``TRIAGE_CONFIG``, the Prefect variable
            ``triage_config``, ``./triage.yaml`` or the demo).
        database: Overrides the database path (default: ``TRIAGE_DB``, the Prefect variable
            ``triage_db``, or the configuration's).
        deliver: False stops after routing (deliveries stay queued in the outbox).
        batch_size: Records per fetch/classify batch.

    Returns:
        The run summary (also printed by ``triage run``).

    Raises:
        SourcesFailed: When any source failed, after every other stage has run: the flow run ends
            Failed with a message naming the sources; the exception carries the summary.
    """
    started = time.monotonic()
    config_path, database = settings_at_run_time(config_path, database)
    config = load_config(config_path, database=database)
    # A damaged or newer store stops the run here, before any stage has written to it.
    with open_store(config.database):
        pass
    # Every stage's numpy work in one BLAS thread: same speed, 65 MB less at the peak of a
    # 100k-mention run (classifiers.model.one_blas_thread says why).
    with one_blas_thread():
        # Reviewers' decisions spooled while the store was busy are applied before anything else.
        review = review_task(config)
        sources = [s for s in config.sources if s.enabled]
        futures = {s.name: ingest_task.submit(config, s, batch_size) for s in sources}
        fetched: dict[str, Any] = {}
        failures: dict[str, str] = {}
        for name, fut in futures.items():
            try:
                fetched[name] = fut.result()
            except StoreError:
                raise  # the store, not the source, is at fault: nothing else can run either
            except Exception as exc:  # noqa: BLE001 - one source down must not stop the others
                failures[name] = f"{type(exc).__name__}: {exc}"
                log.warning("source %s failed: %s", name, failures[name])
        # The sources are stored, and no later stage detects languages: py3langid's tables (about
        # 100 MB) would otherwise sit beside the classifier through the rest of the run.
        release_shared()
        classified = classify_task(config, batch_size)
        routed = route_task(config)
        delivered = deliver_task(config) if deliver else None
        drift = _drift(config) if deliver else None
        # Raw text and author details past their retention period (README, "Privacy").
        retention = retention_task(config)
    summary = {
        "database": location.shown(config.database),
        "config": str(config.path),
        "sources": fetched,
        "failed_sources": failures,
        "classify": classified,
        "route": routed,
        "deliver": delivered,
        "review": review,
        "drift": drift,
        "retention": retention,
        "seconds": round(time.monotonic() - started, 3),
    }
    if failures:
        message = failure_message(failures, len(sources))
        return Failed(message=message, data=SourcesFailed(message, summary))  # type: ignore[return-value]
    return summary


def run_triage(**parameters: Any) -> dict[str, Any]:
    """Call the flow and return its summary, also when sources failed (``failed_sources``)."""
    try:
        summary: dict[str, Any] = triage(**parameters)
    except SourcesFailed as exc:
        return exc.summary
    return summary


# The read-back, weekly-digest and retrain flows, importable from this file as deployment entrypoints
# (flows/triage.py:readback): a worker loads a flow file with flows/ first on sys.path, where any
# other file's `import triage` would find this module instead of the package.
from flows.readback import readback, weekly_digest
from flows.retrain import retrain

__all__ = ["readback", "retrain", "run_triage", "triage", "weekly_digest"]


if __name__ == "__main__":
    print(json.dumps(run_triage(), indent=2, default=str))
