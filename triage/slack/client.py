"""The Slack Web API client: token from env or a Prefect Secret block, retries on 429 and 5xx."""

from __future__ import annotations

import os

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

DEFAULT_API_URL = "https://slack.com/api/"


def api_url() -> str:
    """The Web API base URL: ``SLACK_API_URL`` (tests point it at a local fake) or Slack's."""
    url = os.environ.get("SLACK_API_URL") or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def make_client(token: str, *, timeout: int = 15, max_retries: int = 3) -> WebClient:
    """Create a ``WebClient`` that waits out rate limits and retries server errors.

    Args:
        token: Bot token (``xoxb-...``).
        timeout: Per-request timeout in seconds.
        max_retries: Retries per request for 429, 5xx and connection errors.

    Returns:
        The configured client.
    """
    client = WebClient(token=token, base_url=api_url(), timeout=timeout)
    client.retry_handlers.extend(
        [
            # Honours Retry-After, which is how Slack paces each method's tier.
            RateLimitErrorRetryHandler(max_retry_count=max_retries),
            ServerErrorRetryHandler(max_retry_count=max_retries),
        ]
    )
    if not any(isinstance(h, ConnectionErrorRetryHandler) for h in client.retry_handlers):
        client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=max_retries))
    return client
