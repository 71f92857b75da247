"""HTTP with the manners every connector needs: timeouts, Retry-After, backoff with jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.base import ConnectorError

RETRY_STATUS = {429, 500, 502, 503, 504}
USER_AGENT = "feedback-triage/0.1"


def retry_after_seconds(response: httpx.Response, default: float) -> float:
    """Seconds to wait as the server asked (``Retry-After`` as seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        reset = response.headers.get("x-ratelimit-reset")
        if reset and reset.isdigit():
            wait = float(reset) - time.time()
            # Some APIs send an epoch, others a delta: a small number is a delta.
            return max(0.0, float(reset) if float(reset) < 10**6 else wait)
        return default
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    retries: int = 4,
    backoff: float = 0.5,
    max_wait: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request, retrying 429/5xx and transport errors with backoff.

    Args:
        client: The httpx client (carries base URL, auth headers and timeouts).
        method: HTTP method.
        url: URL or path relative to the client's base URL.
        retries: Extra attempts after the first.
        backoff: First backoff in seconds; doubles each attempt, with jitter.
        max_wait: Upper bound of any single wait, including a server's Retry-After.
        sleep: Injected for tests.
        **kwargs: Passed to ``client.request``.

    Returns:
        The final response (2xx-4xx other than 429). 401/403 raise with a credentials hint.

    Raises:
        ConnectorError: When retries run out or the credentials are refused.
    """
    last: str = ""
    for attempt in range(retries + 1):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
            if attempt == retries:
                break
            sleep(min(max_wait, backoff * 2**attempt * (1 + random.random() / 2)))
            continue
        if response.status_code in RETRY_STATUS:
            last = f"HTTP {response.status_code}"
            if attempt == retries:
                break
            wait = retry_after_seconds(response, backoff * 2**attempt)
            sleep(min(max_wait, wait * (1 + random.random() / 10)))
            continue
        if response.status_code in (401, 403):
            raise ConnectorError(
                f"{method} {response.url}: HTTP {response.status_code}: credentials refused "
                f"(check the token or key for this source)"
            )
        return response
    raise ConnectorError(f"{method} {url}: gave up after {retries + 1} attempts ({last})")
