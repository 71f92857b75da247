"""What the social and community connectors share: a polite JSON client, watermarks, quarantine.

Every social API pages newest-first and answers "what is new since X" a little differently, but the
same three questions come back each time: how to call it politely (timeouts, Retry-After, rate-limit
headers, 5xx backoff, a clear message when the credentials are refused), how to remember where we
stopped without skipping or repeating items, and how to keep a record we cannot read.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import httpx

from connectors import http
from connectors.base import ConnectorError, SourceContext
from triage.http import Backoff

DEFAULT_BACKFILL_DAYS = 7.0
DEFAULT_MAX_PAGES = 50

COMMON_SETTINGS = {
    "backfill_days": "first run: fetch this many days back (default 7)",
    "max_pages": "upper bound of pages per stream and run (default 50)",
    "timeout": "HTTP timeout in seconds (default 20)",
    "max_retries": "retries of 429/5xx/network errors (default 4)",
    "retry_backoff": "first backoff in seconds, doubled per retry (default 0.5)",
    "source_type": "source_type stored with the items (default: per connector)",
}

# Remaining-quota headers as spelled by Reddit/Mastodon, X and Bluesky respectively.
_REMAINING = ("x-ratelimit-remaining", "x-rate-limit-remaining", "ratelimit-remaining")
_RESET = ("x-ratelimit-reset", "x-rate-limit-reset", "ratelimit-reset")

_BREAK = re.compile(r"<\s*(br|/p|/li|/blockquote)\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def strip_html(value: Any) -> Any:
    """Turn an HTML fragment (Mastodon, Discourse, YouTube) into plain text; non-strings pass through.

    Line breaks are kept because they separate sentences the classifier would otherwise glue together.
    """
    if not isinstance(value, str):
        return value
    text = _BREAK.sub("\n", value)
    return html.unescape(_TAG.sub("", text)).strip()


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (untrusted payloads vary in shape)."""
    return value if isinstance(value, dict) else {}


def reset_wait(value: str | None, now: float | None = None) -> float | None:
    """Seconds until a rate-limit window resets, from a delta, an epoch or an ISO timestamp."""
    if not value:
        return None
    now = time.time() if now is None else now
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            return max(0.0, datetime.fromisoformat(text).timestamp() - now)
        except ValueError:
            return None
    # Reddit sends seconds left, X and Bluesky an epoch: a small number cannot be an epoch.
    return max(0.0, number if number < 10**6 else number - now)


def backfill_start(ctx: SourceContext) -> datetime:
    """The oldest creation time the first run of a source fetches."""
    try:
        days = float(ctx.settings.get("backfill_days", DEFAULT_BACKFILL_DAYS))
    except (TypeError, ValueError):
        raise ConnectorError(f"source '{ctx.name}': backfill_days must be a number") from None
    return datetime.now(UTC) - timedelta(days=days)


def int_setting(ctx: SourceContext, key: str, default: int, low: int = 1, high: int = 10**6) -> int:
    """An integer setting clamped to what the API accepts."""
    try:
        value = int(ctx.settings.get(key, default))
    except (TypeError, ValueError):
        raise ConnectorError(f"source '{ctx.name}': {key} must be an integer") from None
    return max(low, min(high, value))


def as_list(ctx: SourceContext, key: str) -> list[str]:
    """A list setting that may also be written as one string."""
    value = ctx.settings.get(key)
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if str(v).strip()]
    raise ConnectorError(f"source '{ctx.name}': {key} must be a list")


class Api:
    """A JSON API client for one source: base URL from settings, retries, rate-limit manners."""

    def __init__(
        self,
        ctx: SourceContext,
        default_base: str,
        *,
        headers: dict[str, str] | None = None,
        auth_hint: str = "",
        base_key: str = "base_url",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Open a client.

        Args:
            ctx: The configured source; ``base_url``, ``timeout``, ``max_retries`` and
                ``retry_backoff`` come from its settings.
            default_base: The real API's base URL.
            headers: Headers sent with every request (auth, API version).
            auth_hint: Appended to the error when the API refuses the credentials.
            base_key: The setting that overrides ``default_base``.
            sleep: Injected by tests.
        """
        self.ctx = ctx
        self.base = str(ctx.settings.get(base_key) or default_base).rstrip("/")
        self.auth_hint = auth_hint
        self.sleep = sleep
        self.retries = int_setting(ctx, "max_retries", 4, low=0, high=20)
        try:
            self.backoff = float(ctx.settings.get("retry_backoff", 0.5))
            timeout = float(ctx.settings.get("timeout", 20))
        except (TypeError, ValueError):
            raise ConnectorError(
                f"source '{ctx.name}': timeout and retry_backoff must be numbers"
            ) from None
        self.policy = Backoff(retries=self.retries, first=self.backoff, sleep=sleep)
        self.client = httpx.Client(
            base_url=self.base,
            timeout=timeout,
            headers={
                "User-Agent": http.USER_AGENT,
                "Accept": "application/json",
                **(headers or {}),
            },
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request with retries; errors become ConnectorError naming the source.

        Returns:
            A response with a status below 400.

        Raises:
            ConnectorError: Credentials refused, retries exhausted, or another 4xx.
        """
        name = self.ctx.name
        try:
            resp = http.request(self.client, method, path, self.policy, **kwargs)
        except ConnectorError as exc:
            hint = f"; {self.auth_hint}" if "credentials refused" in str(exc) else ""
            raise ConnectorError(f"source '{name}': {exc}{hint}") from None
        if resp.status_code >= 400:
            # The body is the API's own error text; bounded, since it is echoed into logs.
            detail = resp.text[:300].replace("\n", " ")
            raise ConnectorError(
                f"source '{name}': {method} {path}: HTTP {resp.status_code}: {detail}"
            )
        self._respect_quota(resp)
        return resp

    def get(self, path: str, params: dict[str, Any]) -> Any:
        """GET ``path`` with ``params`` and decode the JSON answer (the paginator's request)."""
        return self.json("GET", path, params=params)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`call`, decoding the JSON body."""
        resp = self.call(method, path, **kwargs)
        try:
            return resp.json()
        except (ValueError, RecursionError):
            raise ConnectorError(
                f"source '{self.ctx.name}': {method} {path}: the answer is not JSON "
                f"({resp.headers.get('content-type', 'no content type')})"
            ) from None

    def _respect_quota(self, resp: httpx.Response) -> None:
        # Waiting for the window to reset when the quota is spent is cheaper than a 429 (X and
        # Reddit count 429s against the app, and repeated ones can get it blocked).
        for key in _REMAINING:
            remaining = resp.headers.get(key)
            if remaining is None:
                continue
            try:
                spent = float(remaining) < 1
            except ValueError:
                return
            if spent:
                wait = next(
                    (w for k in _RESET if (w := reset_wait(resp.headers.get(k))) is not None), None
                )
                self.sleep(min(60.0, wait if wait is not None else self.backoff))
            return
