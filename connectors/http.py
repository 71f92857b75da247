"""HTTP for connectors: the shared retry helper, with refused credentials as a ConnectorError."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.base import ConnectorError
from triage.http import USER_AGENT, Backoff, GaveUp, send

__all__ = ["USER_AGENT", "request"]


def request(
    client: httpx.Client, method: str, url: str, backoff: Backoff | None = None, **kwargs: Any
) -> httpx.Response:
    """Send a request, retrying 429/5xx and transport errors with backoff (``triage.http``).

    Args:
        client: The httpx client (carries base URL, auth headers and timeouts).
        method: HTTP method.
        url: URL or path relative to the client's base URL.
        backoff: Retries and waits (default: 4 retries from 0.5 s, doubling, with up to 50%
            jitter, no wait over 60 s, a server's Retry-After included).
        **kwargs: Passed to ``client.request``.

    Returns:
        The final response (2xx-4xx other than 429). 401/403 raise with a credentials hint.

    Raises:
        ConnectorError: When retries run out, the credentials are refused or the answer cannot be
            read (a body that does not match its ``Content-Encoding``, a redirect loop).
    """
    try:
        response = send(client, method, url, backoff or Backoff(), **kwargs)
    except GaveUp as exc:
        raise ConnectorError(f"{method} {url}: gave up after {exc}") from None
    except (httpx.DecodingError, httpx.TooManyRedirects) as exc:
        # Not transient (the same answer comes back), but a bad page like any other: the source
        # fails by name and its cursor stays.
        raise ConnectorError(
            f"{method} {url}: the answer cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if response.status_code in (401, 403):
        raise ConnectorError(
            f"{method} {response.url}: HTTP {response.status_code}: credentials refused "
            f"(check the token or key for this source)"
        )
    return response
