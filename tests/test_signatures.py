"""The two request signatures, checked against HMACs written here from the documented schemes.

Ours (README, "`webhook` (web-form intake)" and "`webhook` (signed JSON)"): ``sha256=`` + hex
HMAC-SHA256 of ``"{timestamp}.{raw body}"`` keyed with the shared secret, timestamps more than
5 minutes off refused. Slack's ``v0`` (Slack's "Verifying requests from Slack"): ``v0=`` + hex
HMAC-SHA256 of ``"v0:{timestamp}:{raw body}"`` keyed with the signing secret, same 5-minute
window. The checks are called directly with a fixed clock: no server, no sleeping, and the
exact edges of the window.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from slack_sdk.signature import Clock

from triage.servers.intake import IntakeError, IntakeSettings, verify
from triage.servers.slack_app import verify_signature
from triage.signing import sign

SECRET = "s3cr3t-shared-with-the-form"
NOW = 1_790_000_000
BODY = b'{"text": "the export button does nothing", "email": "ana@example.com"}'


def ours(secret: str, timestamp: str, body: bytes) -> str:
    """The intake's documented signature, written from the README and nothing else."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def slacks(secret: str, timestamp: str, body: str) -> str:
    """Slack's documented v0 signature."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def settings(tmp_path: Path, now: float = NOW) -> IntakeSettings:
    return IntakeSettings(secret=SECRET, spool_dir=tmp_path, clock=lambda: now)


def refusal(tmp_path: Path, headers: dict[str, str], body: bytes = BODY, now: float = NOW) -> str:
    """Call the intake's check; return its 401 reason (the test fails if it accepts)."""
    with pytest.raises(IntakeError) as caught:
        verify(settings(tmp_path, now), headers, body)
    assert caught.value.status == 401
    return caught.value.reason


def signed(timestamp: str, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {"X-Triage-Timestamp": timestamp, "X-Triage-Signature": ours(secret, timestamp, body)}


def test_the_project_signs_as_documented() -> None:
    assert sign(SECRET, "1790000000", BODY) == ours(SECRET, "1790000000", BODY)
    assert sign("other", "1790000000", BODY) != ours(SECRET, "1790000000", BODY)


@pytest.mark.parametrize("skew", [0, 1, -1, 299, -299, 300, -300])
def test_intake_accepts_a_documented_signature_within_five_minutes(
    tmp_path: Path, skew: int
) -> None:
    verify(settings(tmp_path, NOW + skew), signed(str(NOW)), BODY)


@pytest.mark.parametrize("skew", [301, -301, 3600, -86_400])
def test_intake_refuses_a_timestamp_more_than_five_minutes_off(tmp_path: Path, skew: int) -> None:
    # Correctly signed, but captured and sent again later (or by a client whose clock is off).
    reason = refusal(tmp_path, signed(str(NOW)), now=NOW + skew)
    assert reason == "timestamp outside the allowed window (replayed or clock skew)"


def test_intake_refuses_a_body_signed_without_the_timestamp(tmp_path: Path) -> None:
    bare = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    reason = refusal(tmp_path, {"X-Triage-Timestamp": str(NOW), "X-Triage-Signature": bare})
    assert reason == "signature does not match"


def test_intake_refuses_a_capture_replayed_with_a_fresh_timestamp(tmp_path: Path) -> None:
    captured = signed(str(NOW - 3600))
    replay = {**captured, "X-Triage-Timestamp": str(NOW)}
    assert refusal(tmp_path, replay) == "signature does not match"


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "body changed", "one byte appended", "timestamp shifted", "uppercase hex"],
)
def test_intake_refuses_what_the_secret_did_not_sign(tmp_path: Path, case: str) -> None:
    headers = signed(str(NOW))
    body = BODY
    if case == "wrong secret":
        headers = signed(str(NOW), secret=SECRET + "x")
    elif case == "body changed":
        body = BODY.replace(b"nothing", b"nothin!")
    elif case == "one byte appended":
        body = BODY + b" "
    elif case == "timestamp shifted":
        headers["X-Triage-Timestamp"] = str(NOW + 1)
    else:
        headers["X-Triage-Signature"] = "sha256=" + headers["X-Triage-Signature"][7:].upper()
    refusal(tmp_path, headers, body)


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "required"),
        ({"X-Triage-Timestamp": str(NOW)}, "required"),
        ({"X-Triage-Signature": "sha256=" + "0" * 64}, "required"),
        ({"X-Triage-Timestamp": "  ", "X-Triage-Signature": "sha256=" + "0" * 64}, "required"),
        ({"X-Triage-Timestamp": "17900000.5", "X-Triage-Signature": "sha256=" + "0" * 64}, "Unix"),
        ({"X-Triage-Timestamp": "-1790000000", "X-Triage-Signature": "sha256=" + "0" * 64}, "Unix"),
        ({"X-Triage-Timestamp": "1" * 13, "X-Triage-Signature": "sha256=" + "0" * 64}, "Unix"),
        ({"X-Triage-Timestamp": str(NOW), "X-Triage-Signature": "0" * 64}, "sha256="),
        ({"X-Triage-Timestamp": str(NOW), "X-Triage-Signature": "sha256=" + "0" * 63}, "sha256="),
        ({"X-Triage-Timestamp": str(NOW), "X-Triage-Signature": "sha1=" + "0" * 64}, "sha256="),
    ],
)
def test_intake_names_what_is_wrong_with_the_headers(
    tmp_path: Path, headers: dict[str, str], says: str
) -> None:
    assert says in refusal(tmp_path, headers)


def test_intake_tolerates_surrounding_whitespace_in_headers(tmp_path: Path) -> None:
    headers = {k: f" {v} " for k, v in signed(str(NOW)).items()}
    verify(settings(tmp_path), headers, BODY)


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_BODY = "token=xyz&team_id=T1DC2JH3J&command=%2Ftriage&text=queue"


def slack_ok(timestamp: str, signature: str | None, now: int = NOW, body: str = SLACK_BODY) -> bool:
    return verify_signature(SLACK_SECRET, timestamp, signature, body, FixedClock(now))


@pytest.mark.parametrize("skew", [0, 300, -300])
def test_slack_accepts_a_v0_signature_within_five_minutes(skew: int) -> None:
    ts = str(NOW)
    assert slack_ok(ts, slacks(SLACK_SECRET, ts, SLACK_BODY), now=NOW + skew)


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_slack_refuses_a_v0_signature_outside_the_window(skew: int) -> None:
    ts = str(NOW)
    assert not slack_ok(ts, slacks(SLACK_SECRET, ts, SLACK_BODY), now=NOW + skew)


def test_slack_refuses_a_replay_with_a_fresh_timestamp_and_a_signature_without_one() -> None:
    old = str(NOW - 3600)
    assert not slack_ok(str(NOW), slacks(SLACK_SECRET, old, SLACK_BODY))
    bare = "v0=" + hmac.new(SLACK_SECRET.encode(), SLACK_BODY.encode(), hashlib.sha256).hexdigest()
    assert not slack_ok(str(NOW), bare)


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (str(NOW), slacks("another-secret", str(NOW), SLACK_BODY)),
        (str(NOW), slacks(SLACK_SECRET, str(NOW), SLACK_BODY + "&x=1")),
        (str(NOW), "v1=" + slacks(SLACK_SECRET, str(NOW), SLACK_BODY)[3:]),
        (str(NOW), slacks(SLACK_SECRET, str(NOW), SLACK_BODY)[:-1]),
        (str(NOW), slacks(SLACK_SECRET, str(NOW), SLACK_BODY).upper().replace("V0=", "v0=")),
        (str(NOW), ""),
        (str(NOW), None),
        ("", slacks(SLACK_SECRET, "", SLACK_BODY)),
        (f"{NOW}.0", slacks(SLACK_SECRET, f"{NOW}.0", SLACK_BODY)),
        ("1" * 13, slacks(SLACK_SECRET, "1" * 13, SLACK_BODY)),
    ],
    ids=[
        "wrong-secret",
        "body-changed",
        "not-v0",
        "short",
        "uppercase-hex",
        "empty",
        "missing",
        "no-timestamp",
        "fractional-timestamp",
        "absurd-timestamp",
    ],
)
def test_slack_refuses_what_the_signing_secret_did_not_sign(
    timestamp: str, signature: str | None
) -> None:
    assert not slack_ok(timestamp, signature)
