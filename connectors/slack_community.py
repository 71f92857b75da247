"""Messages in chosen channels of a customer-community Slack workspace (``conversations.history``).

slack_sdk's ``WebClient`` is Slack's own, already a dependency for delivery, takes ``base_url`` and
has retry handlers that honour Retry-After, so it is used as is. The token is a *different* one
from the delivery bot's: a bot installed in the community workspace with ``channels:history``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter

from connectors import paging
from connectors import social_api as sa
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.http import JITTER
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

DEFAULT_API_URL = "https://slack.com/api/"

SETTINGS = {
    "channels": "channel ids to read (list, e.g. [C0123ABCD]); the bot must be a member",
    "api_url": f"Web API base URL (default {DEFAULT_API_URL})",
    "workspace_url": "e.g. https://community.slack.com, to build message links (optional)",
    "include_bots": "true: keep bot messages too (default false)",
    "page_size": "messages per page (default 200, max 999)",
    "token_env": "env var of the community workspace's bot token (default SLACK_COMMUNITY_TOKEN)",
    "base_url": "alias of api_url",
    **sa.COMMON_SETTINGS,
}

AUTH_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
AUTH_HINT = (
    "the community workspace refused the token (SLACK_COMMUNITY_TOKEN): install a bot there with "
    "the channels:history scope and use its xoxb- token"
)
# Joins, topic changes and the like say nothing about the product.
KEEP_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message"}


class _ProportionalJitter(Jitter):
    """Up to +50% of the wait: the default adds up to a whole second, which small backoffs drown in."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + JITTER.random() / 2)


def _client(ctx: SourceContext) -> WebClient:
    token = ctx.require_credential("token_env", "SLACK_COMMUNITY_TOKEN")
    url = str(ctx.settings.get("api_url") or ctx.settings.get("base_url") or DEFAULT_API_URL)
    retries = sa.int_setting(ctx, "max_retries", 4, low=0, high=20)
    try:
        timeout = int(float(ctx.settings.get("timeout", 20)))
        backoff = float(ctx.settings.get("retry_backoff", 0.5))
    except (TypeError, ValueError):
        raise ConnectorError(
            f"source '{ctx.name}': timeout and retry_backoff must be numbers"
        ) from None
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff, jitter=_ProportionalJitter())
    return WebClient(
        token=token,
        base_url=url if url.endswith("/") else url + "/",
        timeout=max(1, timeout),
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=retries, interval_calculator=interval),
            # Honours Retry-After, which is how Slack paces conversations.history (tier 3).
            RateLimitErrorRetryHandler(max_retry_count=retries),
            ServerErrorRetryHandler(max_retry_count=retries, interval_calculator=interval),
        ],
    )


def _call(ctx: SourceContext, client: WebClient, method: str, **kwargs: Any) -> dict[str, Any]:
    try:
        resp = client.api_call(method, params=kwargs)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        status = exc.response.status_code if exc.response is not None else "?"
        if error in AUTH_ERRORS:
            raise ConnectorError(f"source '{ctx.name}': {method}: {error}; {AUTH_HINT}") from None
        raise ConnectorError(
            f"source '{ctx.name}': {method} failed: HTTP {status}: {error or 'no error code'}"
        ) from None
    except (SlackClientError, OSError) as exc:
        raise ConnectorError(
            f"source '{ctx.name}': {method}: {type(exc).__name__}: {exc}"
        ) from None
    return dict(resp.data) if isinstance(resp.data, dict) else {}


def _channels(ctx: SourceContext) -> list[str]:
    channels = sa.as_list(ctx, "channels")
    if not channels:
        raise ConnectorError(f"source '{ctx.name}': setting 'channels' is required")
    return channels


@record_parser
def _message(ctx: SourceContext, channel: str, msg: Any, fetched_at: datetime) -> Mention:
    if not isinstance(msg, dict) or not msg.get("ts"):
        raise InvalidRecord("message has no ts")
    subtype = msg.get("subtype")
    if subtype is not None and not isinstance(subtype, str):
        raise InvalidRecord(f"message subtype is {type(subtype).__name__}, not text")
    ts = str(msg["ts"])
    try:
        seconds = float(ts)
    except ValueError:
        raise InvalidRecord(f"message ts is not a Slack timestamp: {ts!r}") from None
    # Outside the try: InvalidRecord is a ValueError, and a time out of range keeps its reason.
    created = parse_timestamp(seconds)
    workspace = str(ctx.settings.get("workspace_url") or "").rstrip("/")
    profile = sa.obj(msg.get("user_profile"))
    thread = msg.get("thread_ts")
    return Mention(
        source=ctx.name,
        external_id=f"{channel}:{ts}",
        text=clean_text(msg.get("text")),
        created_at=created,
        url=f"{workspace}/archives/{channel}/p{ts.replace('.', '')}" if workspace else None,
        author=Author(
            handle=msg.get("user") or msg.get("bot_id"),
            name=profile.get("display_name") or profile.get("real_name"),
        ),
        fetched_at=fetched_at,
        thread=f"{channel}:{thread}" if thread else None,
        source_type=str(ctx.settings.get("source_type") or "community_chat"),
        raw=msg,
    )


def check(ctx: SourceContext) -> str:
    """Verify the token (``auth.test``) and read one message of every channel."""
    channels = _channels(ctx)
    client = _client(ctx)
    who = _call(ctx, client, "auth.test")
    for channel in channels:
        _call(ctx, client, "conversations.history", channel=channel, limit=1)
    return f"token of '{who.get('team', '?')}' accepted; {len(channels)} channels readable"


def _messages(channel: str, bots: bool) -> Callable[[Any], list[paging.Entry]]:
    def entries(data: Any) -> list[paging.Entry]:
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise paging.BadAnswer(f"history of {channel} has no messages")
        out = []
        for msg in messages:
            ts = msg.get("ts") if isinstance(msg, dict) else None
            skip = False
            subtype = msg.get("subtype") if isinstance(msg, dict) else None
            # A subtype that is not text says nothing we can judge: the message is not skipped,
            # and _message quarantines it with the reason.
            if isinstance(msg, dict) and (subtype is None or isinstance(subtype, str)):
                is_bot = bool(msg.get("bot_id")) or subtype == "bot_message"
                skip = (is_bot and not bots) or (not is_bot and subtype not in KEEP_SUBTYPES)
            out.append(
                paging.Entry(
                    (channel, msg),
                    id=f"{channel}:{ts}" if ts else None,
                    position=ts if isinstance(ts, str) else None,
                    raw=msg,
                    skip=skip,
                    # A skipped message moves `oldest` only with a ts that is a valid time, as a
                    # read one must have: a join at 9999999999.000000 would hide every later post.
                    vouched=skip and _valid_ts(ts),
                )
            )
        return out

    return entries


def _next_cursor(data: Any) -> Any:
    return (
        sa.obj(data.get("response_metadata")).get("next_cursor") if data.get("has_more") else None
    )


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield channel messages newer than each channel's stored ``ts`` (Slack's ``oldest``).

    Args:
        ctx: The configured source.
        cursor: ``{channel: {"ts": "1700000000.000100"}}`` or None (first run: ``backfill_days``).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one.
    """
    channels = _channels(ctx)
    state = cursor if isinstance(cursor, dict) else {}
    start = f"{sa.backfill_start(ctx).timestamp():.6f}"
    page_size = sa.int_setting(ctx, "page_size", 200, high=999)
    bots = bool(ctx.settings.get("include_bots"))
    client = _client(ctx)
    streams = []
    for channel in channels:
        oldest = str((state.get(channel) or {}).get("ts") or start)
        # `oldest` is exclusive (inclusive defaults to false): the stored ts is not re-read.
        params = {"channel": channel, "oldest": oldest, "limit": page_size}
        mark = paging.HighestId("ts", oldest, _ts_key)
        pager = paging.NextToken("cursor", _next_cursor)
        streams.append(
            paging.Stream(
                channel, "conversations.history", params, mark, pager, _messages(channel, bots)
            )
        )
    yield from paging.paginate(
        ctx,
        cursor,
        streams,
        lambda method, params: _call(ctx, client, method, **params),
        lambda e, at: _message(ctx, e.record[0], e.record[1], at),
    )


def _ts_key(ts: Any) -> float | None:
    try:
        return float(ts) if isinstance(ts, str) else None
    except ValueError:
        return None


def _valid_ts(ts: Any) -> bool:
    """True for a ts that _message would accept: text, seconds that are a valid time."""
    if not isinstance(ts, str):
        return False
    try:
        parse_timestamp(float(ts))
    except ValueError:  # InvalidRecord is a ValueError too
        return False
    return True
