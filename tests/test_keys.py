"""Stored ids and keys never change: known values of every key the project derives."""

from __future__ import annotations

from pathlib import Path

from triage.destinations.slack import batch_key
from triage.keys import stable_key
from triage.models import Rejected, item_id
from triage.routing import delivery_key
from triage.store import open_store

ITEM = "0123456789abcdef0123"


def test_item_ids_are_the_ones_already_stored() -> None:
    assert item_id("reddit", "t3_abc") == "213a213587d80eb5ec1c"
    assert item_id("forms", "é-1") == "baa92d215a6a3a58d60f"
    # A lone surrogate from a lenient JSON decoder is kept in the digest, not an error.
    assert item_id("x", "\ud800lone") == "98e1fd2f592f590f3300"


def test_outbox_batch_and_decision_keys_are_the_ones_already_stored() -> None:
    assert delivery_key(ITEM, "review-channel", "review") == "94792e43383ab8789742933f"
    batch = [{"created_at": "2026-01-01 00:00:00+00:00"}]
    assert batch_key("review-channel", batch) == "21a5f99faad1f359eed5b580"
    decision = stable_key(ITEM, "U0ALICE", "relabel", "kudos", "1700000000.000100")
    assert decision == "19b5aae913ad38a7e6df06f3"


def test_group_and_quarantine_keys_keep_their_sizes(tmp_path: Path) -> None:
    # Feature groups (the github destination) are 8-byte keys of destination and delivery key.
    assert stable_key("github", "sig", size=8) == "f594fe180308639a"
    with open_store(tmp_path / "t.duckdb") as store:
        store.quarantine([Rejected("file", "bad json", '{"x": 1}')])
        keys = [r["key"] for r in store.quarantined()]
    assert keys == [stable_key("file", "bad json", '{"x": 1}', errors="replace")]
    # Quarantine keys replace what UTF-8 cannot encode.
    key = stable_key("file", "bad json", '{"x": \ud800}', errors="replace")
    assert key == "e019c8bb5c40f0b9327b42fc"
