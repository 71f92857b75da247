"""The report and the digest from the store: what ``triage report``, ``triage digest`` and the
weekly-digest deployment call.

:func:`report_data` fills :class:`~triage.report.data.ReportData` from a
:class:`~triage.customers.view.CustomerView` and the review backlog. :func:`send_digest` builds the
digest and either posts it to the configured Slack destination (each chart uploaded with the files
API: ``files.getUploadURLExternal``, the upload, ``files.completeUploadExternal``; then one
``chat.postMessage`` whose image blocks reference the file ids) or, with ``dry_run`` or no token,
writes the preview under ``outbox_dir/<destination>/``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError, SlackRequestError

from triage.customers.view import CustomerView, load_view
from triage.privacy.policy import PrivacyPolicy
from triage.report.data import BacklogItem, ReportData, build_report_data
from triage.report.digest import Digest, build_digest, write_digest_preview
from triage.report.html import ReportResult, write_report
from triage.store.location import why_not_made

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from triage.config import Config
    from triage.store import Store

log = logging.getLogger("triage.report")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def report_data(
    store: Store,
    config: Config,
    *,
    since: timedelta,
    now: datetime | None = None,
    destination: str | None = None,
) -> tuple[ReportData, CustomerView]:
    """The report's figures for the period ``now - since`` .. ``now``, and the customers behind it.

    The figures' texts (quotes, titles, names) are redacted for ``destination``, or entirely
    when it is None (a report written to files), as README "Privacy" describes.
    """
    now = now or datetime.now(UTC)
    view = load_view(store, config.customers, now)
    backlog = [
        BacklogItem(
            item_id=str(r["item_id"]),
            label=str(r["label"]),
            source=str(r["source"]),
            waiting_since=_utc(r["waiting_since"]),
            url=r.get("url"),
        )
        for r in store.review_backlog()
    ]
    data = build_report_data(
        view.mentions,
        view.resolution.profiles,
        view.lifecycles,
        view.outcomes,
        backlog,
        since=now - since,
        now=now,
    )
    return PrivacyPolicy(config).tree(data, destination), view


def make_report(
    store: Store, config: Config, out: Path, *, since: timedelta, now: datetime | None = None
) -> ReportResult:
    """Write ``out/index.html`` with its charts and CSVs."""
    data, _ = report_data(store, config, since=since, now=now)
    return write_report(data, out)


class PreviewNotWritten(RuntimeError):
    """The digest preview's folder cannot be made or written (under a file, no permission)."""


@dataclass(frozen=True, slots=True)
class DigestResult:
    """What :func:`send_digest` did: ``posted`` (``channel:ts``) or ``preview`` (a file)."""

    destination: str
    channel: str
    posted: str | None = None
    preview: Path | None = None
    uploaded: int = 0
    failed_uploads: tuple[str, ...] = ()


def upload_charts(client: WebClient, digest: Digest) -> tuple[dict[str, str], list[str]]:
    """Upload each chart privately (no channel: the message shows it); return ids and failures.

    A chart that fails to upload is left out of the message, never the whole digest.
    """
    ids: dict[str, str] = {}
    failed: list[str] = []
    for f in digest.files:
        try:
            resp = client.files_upload_v2(
                file=str(f.path),
                filename=f.path.name,
                title=f.title,
                # files.getUploadURLExternal takes at most 1,000 characters of alt text.
                alt_txt=f.alt_text[:1000],
            )
            ids[f.key] = str(resp["file"]["id"])
        except (SlackApiError, SlackRequestError) as exc:
            log.warning("chart %s not uploaded: %s", f.key, exc)
            failed.append(f.key)
    return ids, failed


def send_digest(
    store: Store,
    config: Config,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    workdir: Path | None = None,
) -> DigestResult:
    """Build the digest for the configured period and post it (or write the preview).

    Raises:
        ValueError: No ``customers.digest.destination`` is configured.
        slack_sdk.errors.SlackApiError: Posting the message failed (the charts may be uploaded).
    """
    from triage.destinations import build_destinations
    from triage.destinations.slack import SlackDestination

    name = config.customers.digest_destination
    if not name:
        raise ValueError("no digest destination: set customers.digest.destination")
    now = now or datetime.now(UTC)
    dest_cfg = config.destinations[name]
    channel = str(dest_cfg.settings.get("channel") or name)
    data, _ = report_data(
        store, config, since=config.customers.digest_period, now=now, destination=name
    )
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        result = write_report(data, Path(tmp))
        digest = build_digest(data, result.charts)
        dest = None if dry_run else build_destinations(config).get(name)
        if not isinstance(dest, SlackDestination):
            folder = config.outbox_dir / name
            try:
                path = write_digest_preview(
                    digest, folder, channel=channel, key=f"digest-{now:%Y-%m-%d}"
                )
            except OSError as exc:
                why = why_not_made(folder, exc)
                raise PreviewNotWritten(
                    f"cannot write the digest preview under {folder}: {why}"
                ) from None
            return DigestResult(name, channel, preview=path)
        ids, failed = upload_charts(dest.client, digest)
        resp: Any = dest.client.chat_postMessage(
            channel=dest.channel_id,
            text=digest.text,
            blocks=digest.with_file_ids(ids),
            unfurl_links=False,
            unfurl_media=False,
        )
    return DigestResult(
        name,
        channel,
        posted=f"{resp['channel']}:{resp['ts']}",
        uploaded=len(ids),
        failed_uploads=tuple(failed),
    )
