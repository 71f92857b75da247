"""HTTP for connectors: the shared retry helper, with refused credentials as a ConnectorError."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from connectors.base import ConnectorError
from triage.http import USER_AGENT, Backoff, GaveUp, send

__all__ = ["USER_AGENT", "request"]


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
    """Send a request, retrying 429/5xx and transport errors with backoff (``triage.http``).

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
    policy = Backoff(retries=retries, first=backoff, cap=max_wait, jitter=0.5, sleep=sleep)
    try:
        response = send(client, method, url, policy, **kwargs)
    except GaveUp as exc:
        raise ConnectorError(f"{method} {url}: gave up after {exc}") from None
    if response.status_code in (401, 403):
        raise ConnectorError(
            f"{method} {response.url}: HTTP {response.status_code}: credentials refused "
            f"(check the token or key for this source)"
        )
    return response
