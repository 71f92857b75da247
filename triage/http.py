"""The one retry helper: backoff, ``Retry-After`` and the HTTP manners connectors and handoffs share.

Connectors (``connectors/http.py``, the IMAP connection), and the handoff destinations each used to
run their own retry loop. They now all call :func:`retry` (any action) or :func:`send` (an HTTP
request) with their own retry predicate: what to retry stays with the caller (a handoff that is not
idempotent must not resend a create after a timeout; a connector treats 401/403 as refused
credentials), how to wait lives here.

Why tenacity (not stamina): stamina is a friendly layer over tenacity, but it retries on exceptions
only, its test mode is a process-wide switch, and it turns on instrumentation by itself. We retry
on *answers* as well (a 429 or 503 is a response, not an exception), wait for as long as that
answer's ``Retry-After`` asks, and tests inject ``sleep`` to see every wait: tenacity's
``retry_if_result``, a wait function that reads the last outcome and its ``sleep`` argument do
exactly that, with no dependency beyond tenacity itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
)

JITTER = random.Random()
"""The jitter of retry waits (here, deliveries and the Slack source). A generator of its own:
retries run in worker threads, and drawing from the global one would move the random state that
a caller (or a test framework) seeded and relies on."""

T = TypeVar("T")

# 429 and the 5xx answers that mean "try again later"; other answers go back to the caller.
RETRY_STATUS = {429, 500, 502, 503, 504}
USER_AGENT = "feedback-triage/0.1"


@dataclass(frozen=True, slots=True)
class Backoff:
    """How many times to retry and how long to wait in between.

    The n-th retry waits ``first * 2**n`` seconds plus up to ``jitter`` of that again, unless the
    server asked for a time (``Retry-After``), which is honoured with up to 10% added; no wait
    exceeds ``cap``.
    """

    retries: int = 4
    first: float = 0.5
    cap: float = 60.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int, asked: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        if asked is not None:
            # A little jitter so that clients told the same time do not all come back at once.
            return min(self.cap, asked * (1 + JITTER.random() / 10))
        return min(self.cap, self.first * 2**attempt * (1 + JITTER.random() * self.jitter))


def _never(_: Any) -> bool:
    return False


def _no_ask(_: Any) -> float | None:
    return None


def retry(
    action: Callable[[], T],
    backoff: Backoff,
    *,
    errors: tuple[type[BaseException], ...] = (),
    again: Callable[[T], bool] = _never,
    asked: Callable[[T], float | None] = _no_ask,
) -> T:
    """Run ``action`` until it succeeds, retrying what the caller's predicates call transient.

    Args:
        action: The attempt (no arguments).
        backoff: Number of retries and the waits between them.
        errors: Exceptions worth another attempt; any other exception propagates at once.
        again: True for a result worth another attempt (an HTTP 429, say).
        asked: The wait a result asks for (``Retry-After``), or None for the usual backoff.

    Returns:
        The first result ``again`` accepts, or the last result once the retries are spent (the
        caller tells the two apart with its own predicate).

    Raises:
        BaseException: The last exception of ``errors`` once the retries are spent.
    """

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        attempt = state.attempt_number - 1
        if outcome is not None and not outcome.failed:
            return backoff.wait(attempt, asked(outcome.result()))
        return backoff.wait(attempt)

    def give_up(state: RetryCallState) -> T:
        assert state.outcome is not None  # tenacity gives up only after an attempt
        return state.outcome.result()  # re-raises a failure

    retrying = Retrying(
        stop=stop_after_attempt(max(0, backoff.retries) + 1),
        wait=wait,
        retry=retry_if_exception_type(errors) | retry_if_result(again),
        sleep=backoff.sleep,
        retry_error_callback=give_up,
    )
    return retrying(action)


def retry_after_seconds(response: httpx.Response, default: float | None) -> float | None:
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


class GaveUp(Exception):
    """Every attempt of a request failed transiently; the message says how the last one did."""

    def __init__(self, attempts: int, last: str) -> None:
        """Keep the number of attempts and the last failure (``HTTP 503``, ``ConnectTimeout: …``)."""
        super().__init__(f"{attempts} attempts ({last})")
        self.attempts = attempts
        self.last = last


def transient_status(response: httpx.Response) -> bool:
    """The default retry predicate of :func:`send`: 429 and the passing 5xx answers."""
    return response.status_code in RETRY_STATUS


def send(
    client: httpx.Client,
    method: str,
    url: str,
    backoff: Backoff,
    *,
    retry_transport: bool = True,
    retryable: Callable[[httpx.Response], bool] = transient_status,
    asked: Callable[[httpx.Response], float | None] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one HTTP request through :func:`retry`.

    Args:
        client: The httpx client (base URL, auth headers, timeouts).
        method: HTTP method.
        url: URL, or a path relative to the client's base URL.
        backoff: Retries and waits.
        retry_transport: False for a request that must not be sent twice: a timeout or a broken
            connection then propagates as the ``httpx.TransportError`` at once.
        retryable: True for an answer worth another attempt.
        asked: The wait an answer asks for, in seconds, or None for the backoff's own (default:
            its ``Retry-After``, see :func:`retry_after_seconds`).
        **kwargs: Passed to ``client.request``.

    Returns:
        The first answer ``retryable`` refuses (2xx, or a 4xx the caller interprets).

    Raises:
        GaveUp: When the retries are spent.
        httpx.TransportError: With ``retry_transport=False``.
    """
    errors: tuple[type[BaseException], ...] = (httpx.TransportError,) if retry_transport else ()
    try:
        response = retry(
            lambda: client.request(method, url, **kwargs),
            backoff,
            errors=errors,
            again=retryable,
            asked=asked or (lambda r: retry_after_seconds(r, None)),
        )
    except httpx.TransportError as exc:
        if not retry_transport:
            raise
        raise GaveUp(backoff.retries + 1, f"{type(exc).__name__}: {exc}") from exc
    if retryable(response):
        raise GaveUp(backoff.retries + 1, f"HTTP {response.status_code}")
    return response
