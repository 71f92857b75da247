"""The one list of tables that hold personal data: what erasure and retention act on.

A feature that adds a table holding text from the public or details of its authors appends one
:class:`PersonalTable` to :data:`PERSONAL_TABLES` (in its own module, at import, or here) and
``triage forget`` and the retention job cover it with no other change::

    from triage.privacy.registry import PERSONAL_TABLES, PersonalTable

    PERSONAL_TABLES.append(
        PersonalTable("customer_profiles", item_column=None, author_columns=("author_key",),
                      key_columns=("author_key",), text_columns=("notes",),
                      time_column="updated_at")
    )

A table is reached in one of two ways: rows whose ``item_column`` is one of the person's items
(found in ``items`` by author), or rows whose ``key_columns`` equal one of the person's
identifiers (their handle, e-mail, profile URL or author key). Erasure deletes those rows
(``erase="delete"``) or blanks their ``text_columns`` and nulls their ``author_columns`` and
``detail_columns`` (``erase="anonymise"``). Retention, past the table's configured period,
blanks ``text_columns`` and nulls ``author_columns`` and ``detail_columns`` of rows whose
``time_column`` is older (aggregates such as labels, scores and routes are kept); tables without
``text_columns`` and without author details are not retention targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ERASED = "[erased]"
"""What replaces a text that was erased or has expired (``text`` columns are NOT NULL)."""


@dataclass(frozen=True, slots=True)
class PersonalTable:
    """One table with personal data and how erasure and retention treat it.

    Attributes:
        table: The table name.
        item_column: Column holding an ``items.id`` (None: not linked to items).
        author_columns: Columns with details of the author (handle, name, URL, author key):
            nulled (or set to ``[erased]`` when NOT NULL) on erasure and expiry.
        key_columns: Columns compared exactly with the person's identifiers (handle, e-mail,
            author key) to find their rows when ``item_column`` does not link them. Never a
            display name: two people share names.
        text_columns: Free text from the public (blanked to ``[erased]`` on expiry).
        detail_columns: Further personal columns nulled with the author's (raw payloads, URLs).
        time_column: When the row was written; retention compares it with the period.
        erase: ``delete`` the person's rows, or ``anonymise`` them in place.
        retention: Whether a retention period may be configured for the table.
    """

    table: str
    item_column: str | None = "item_id"
    author_columns: tuple[str, ...] = ()
    key_columns: tuple[str, ...] = ()
    # Columns holding customer identity keys (``handle:<platform>:<handle>``,
    # ``email:<address>``), alone or in a JSON list: rows naming the person are erased.
    identity_columns: tuple[str, ...] = ()
    text_columns: tuple[str, ...] = ()
    detail_columns: tuple[str, ...] = ()
    time_column: str | None = None
    erase: Literal["delete", "anonymise"] = "delete"
    retention: bool = True
    # What expiry does to a row: blank its text and author details, or delete it (training
    # examples: a blanked text would be trained on).
    expire: Literal["blank", "delete"] = "blank"


PERSONAL_TABLES: list[PersonalTable] = [
    PersonalTable(
        "items",
        item_column="id",
        author_columns=("author_handle", "author_name", "author_url"),
        key_columns=("author_handle",),
        text_columns=("text",),
        detail_columns=("raw", "url"),
        # Kept for the period from when we collected it (a backfill of old posts is not
        # expired before anyone has seen it).
        time_column="stored_at",
    ),
    # Linked to an item: its label and scores are aggregates, but they describe the person.
    PersonalTable("predictions", retention=False),
    PersonalTable("routes", retention=False),
    PersonalTable("outbox", retention=False),
    PersonalTable("review_decisions", retention=False),
    PersonalTable("review_audit", detail_columns=("response_url",), retention=False),
    PersonalTable("review_reminders", retention=False),
    PersonalTable(
        "training_examples", text_columns=("text",), time_column="decided_at", expire="delete"
    ),
    PersonalTable(
        "handoff_refs",
        author_columns=("author_key",),
        key_columns=("author_key",),
        time_column="created_at",
    ),
    PersonalTable("feature_mentions", retention=False),
    PersonalTable(
        "testimonials",
        author_columns=("author_key", "author_handle", "author_name", "author_url"),
        key_columns=("author_key", "author_handle"),
        text_columns=("text",),
        detail_columns=("url",),
        time_column="recorded_at",
    ),
    # Issue 15: corrections imported from files or kept from reviews (training data).
    PersonalTable("corrections", text_columns=("text",), time_column="created_at", expire="delete"),
    # Issue 16: derived customer profiles and manual merges (identity keys), handoff read-back.
    PersonalTable(
        "customer_profiles",
        item_column=None,
        identity_columns=("identities",),
        author_columns=("display_name",),
        retention=False,
    ),
    PersonalTable(
        "customer_merges", item_column=None, identity_columns=("a_key", "b_key"), retention=False
    ),
    PersonalTable("handoff_outcomes", retention=False),
    # A group's title is the first request's text; the group itself is an aggregate.
    PersonalTable(
        "feature_groups",
        item_column=None,
        text_columns=("title",),
        erase="anonymise",
        retention=False,
    ),
    PersonalTable(
        "quarantine",
        item_column=None,
        detail_columns=("raw",),
        time_column="received_at",
        erase="anonymise",
    ),
]


def retention_tables() -> list[str]:
    """Tables a retention period may be configured for."""
    return [t.table for t in PERSONAL_TABLES if t.retention]


def personal_table(name: str) -> PersonalTable:
    """The registry entry of ``name``.

    Raises:
        KeyError: The table is not registered.
    """
    for entry in PERSONAL_TABLES:
        if entry.table == name:
            return entry
    raise KeyError(name)
