"""The store's schema: its migrations, in order, and the names of the states it keeps."""

from __future__ import annotations

# Each migration runs once, in order, inside one transaction with its bookkeeping row.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE SEQUENCE item_seq;
        CREATE TABLE items (
            id VARCHAR PRIMARY KEY,
            seq BIGINT NOT NULL DEFAULT nextval('item_seq'),
            source VARCHAR NOT NULL,
            external_id VARCHAR NOT NULL,
            url VARCHAR,
            author_handle VARCHAR,
            author_name VARCHAR,
            author_url VARCHAR,
            author_followers BIGINT,
            text VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL,
            thread VARCHAR,
            in_reply_to VARCHAR,
            language VARCHAR,
            source_type VARCHAR,
            raw VARCHAR,
            stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE quarantine (
            key VARCHAR PRIMARY KEY,
            source VARCHAR NOT NULL,
            external_id VARCHAR,
            reason VARCHAR NOT NULL,
            raw VARCHAR,
            received_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE connector_state (
            connector VARCHAR PRIMARY KEY,
            cursor VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE predictions (
            item_id VARCHAR PRIMARY KEY,
            label VARCHAR NOT NULL,
            labels VARCHAR[] NOT NULL,
            score DOUBLE NOT NULL,
            scores VARCHAR NOT NULL,
            needs_review BOOLEAN NOT NULL,
            review_reason VARCHAR,
            model_version VARCHAR NOT NULL,
            classified_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE routes (
            item_id VARCHAR PRIMARY KEY,
            department VARCHAR,
            rule VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            routed_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE outbox (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            destination VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            state VARCHAR NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error VARCHAR,
            next_attempt_at TIMESTAMPTZ,
            external_ref VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            sent_at TIMESTAMPTZ
        );
        """,
    ),
    (
        2,
        "slack review decisions",
        """
        -- One row per item: the first decision applied wins, later clicks lose to it.
        CREATE TABLE review_decisions (
            item_id VARCHAR PRIMARY KEY,
            decision_id VARCHAR NOT NULL UNIQUE,
            action VARCHAR NOT NULL,
            value VARCHAR,
            user_id VARCHAR NOT NULL,
            user_name VARCHAR,
            decided_at TIMESTAMPTZ NOT NULL,
            before_label VARCHAR,
            before_department VARCHAR,
            before_state VARCHAR,
            after_label VARCHAR,
            after_department VARCHAR,
            after_state VARCHAR NOT NULL,
            channel VARCHAR,
            message_ts VARCHAR,
            message_updated_at TIMESTAMPTZ,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- Every click, winning or not: who, when, what, before and after.
        CREATE TABLE review_audit (
            decision_id VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            value VARCHAR,
            user_id VARCHAR NOT NULL,
            user_name VARCHAR,
            decided_at TIMESTAMPTZ NOT NULL,
            outcome VARCHAR NOT NULL,
            before VARCHAR,
            after VARCHAR,
            response_url VARCHAR,
            notified_at TIMESTAMPTZ,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE training_examples (
            item_id VARCHAR PRIMARY KEY,
            text VARCHAR NOT NULL,
            label VARCHAR NOT NULL,
            previous_label VARCHAR,
            decided_by VARCHAR NOT NULL,
            decided_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE review_reminders (
            item_id VARCHAR NOT NULL,
            period BIGINT NOT NULL,
            sent_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (item_id, period)
        );
        CREATE TABLE review_batches (
            key VARCHAR PRIMARY KEY,
            destination VARCHAR NOT NULL,
            channel VARCHAR NOT NULL,
            ts VARCHAR NOT NULL,
            items INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        "department handoffs",
        """
        -- One row per handoff delivery to an external system: what was created or joined there.
        CREATE TABLE handoff_refs (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            destination VARCHAR NOT NULL,
            system VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            target_id VARCHAR,
            url VARCHAR,
            author_key VARCHAR,
            state VARCHAR NOT NULL,
            note_state VARCHAR NOT NULL DEFAULT 'none',
            note_ref VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            done_at TIMESTAMPTZ
        );
        CREATE TABLE feature_groups (
            id VARCHAR PRIMARY KEY,
            destination VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            signature VARCHAR NOT NULL,
            mentions INTEGER NOT NULL DEFAULT 0,
            issue_number BIGINT,
            issue_url VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE feature_mentions (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            group_id VARCHAR NOT NULL,
            similarity DOUBLE NOT NULL,
            signature VARCHAR NOT NULL,
            added_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE testimonials (
            item_id VARCHAR PRIMARY KEY,
            key VARCHAR NOT NULL,
            author_key VARCHAR NOT NULL,
            author_handle VARCHAR,
            author_name VARCHAR,
            author_url VARCHAR,
            source VARCHAR NOT NULL,
            url VARCHAR,
            text VARCHAR NOT NULL,
            score DOUBLE,
            said_at TIMESTAMPTZ NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- died_at is the dead-lettering moment, so a delivery that dies again after a retry is
        -- announced again.
        CREATE TABLE dead_letter_alerts (
            key VARCHAR NOT NULL,
            died_at TIMESTAMPTZ NOT NULL,
            ref VARCHAR,
            announced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (key, died_at)
        );
        """,
    ),
    (
        4,
        "learning loop: corrections and drift alerts",
        """
        -- Corrections imported from files (classifiers/corrections.py describes the rows).
        -- Reviewers' Slack decisions stay in training_examples / review_decisions and are read
        -- from there. Append-only: the current label of a text is its latest row.
        CREATE SEQUENCE correction_seq;
        CREATE TABLE corrections (
            id VARCHAR PRIMARY KEY,
            seq BIGINT NOT NULL DEFAULT nextval('correction_seq'),
            text_key VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            label VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            provenance_kind VARCHAR NOT NULL,
            provenance VARCHAR NOT NULL,
            line BIGINT,
            item_id VARCHAR,
            previous_label VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX corrections_text_key ON corrections (text_key);
        -- One row per (source, day, signal) that left its band: announced once.
        CREATE TABLE drift_alerts (
            key VARCHAR PRIMARY KEY,
            source VARCHAR NOT NULL,
            day DATE NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE NOT NULL,
            low DOUBLE NOT NULL,
            high DOUBLE NOT NULL,
            median DOUBLE NOT NULL,
            items BIGINT NOT NULL,
            example_ids VARCHAR NOT NULL,
            summary VARCHAR NOT NULL,
            ref VARCHAR,
            detected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            announced_at TIMESTAMPTZ
        );
        """,
    ),
    (
        5,
        "customers and handoff outcomes",
        """
        -- Manual merges (`triage customers merge A B`), kept as identity keys: a customer id can
        -- change when profiles merge, the keys never do.
        CREATE TABLE customer_merges (
            a_key VARCHAR NOT NULL,
            b_key VARCHAR NOT NULL,
            merged_by VARCHAR,
            merged_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (a_key, b_key)
        );
        -- The latest derived profiles and stages (refreshed by the read-back flow), so `triage
        -- customers list` and the digest can say who moved since the last refresh.
        CREATE TABLE customer_profiles (
            id VARCHAR PRIMARY KEY,
            display_name VARCHAR NOT NULL,
            stage VARCHAR NOT NULL,
            stage_since TIMESTAMPTZ,
            identities VARCHAR NOT NULL,
            mentions BIGINT NOT NULL,
            reach BIGINT NOT NULL DEFAULT 0,
            first_seen TIMESTAMPTZ NOT NULL,
            last_seen TIMESTAMPTZ NOT NULL,
            previous_stage VARCHAR,
            refreshed_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- What became of each handoff, read back from its tool (or an export). A failed read
        -- keeps the last known state and records the error: nothing read before is lost.
        CREATE TABLE handoff_outcomes (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            department VARCHAR NOT NULL,
            system VARCHAR NOT NULL,
            destination VARCHAR,
            target_id VARCHAR,
            state VARCHAR NOT NULL,
            external_state VARCHAR,
            handed_at TIMESTAMPTZ NOT NULL,
            first_response_at TIMESTAMPTZ,
            resolved_at TIMESTAMPTZ,
            comments BIGINT,
            checked_at TIMESTAMPTZ,
            last_error VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        6,
        "privacy: erasure audit and retention runs",
        """
        -- One row per honoured erasure request (`triage forget`): what was removed and where the
        -- person's items had already been delivered. Never the person's data or identifiers.
        CREATE TABLE erasures (
            id VARCHAR PRIMARY KEY,
            erased_at TIMESTAMPTZ NOT NULL,
            requested_by VARCHAR,
            items BIGINT NOT NULL,
            removed VARCHAR NOT NULL,
            deliveries VARCHAR NOT NULL
        );
        -- What each retention pass blanked or deleted, per table.
        CREATE TABLE retention_runs (
            table_name VARCHAR NOT NULL,
            ran_at TIMESTAMPTZ NOT NULL,
            cutoff TIMESTAMPTZ NOT NULL,
            row_count BIGINT NOT NULL,
            PRIMARY KEY (table_name, ran_at)
        );
        """,
    ),
    (
        7,
        "pending-work floors",
        """
        -- Per stage (classify, route): every item with seq <= seq has that stage's result, so
        -- the search for pending work starts above it instead of joining the whole store.
        CREATE TABLE stage_floors (
            stage VARCHAR PRIMARY KEY,
            seq BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

# "previewed": written as a JSON preview (no credentials), not posted anywhere; counted apart from
# "sent" so `triage status` never reports previews as sends.
OUTBOX_STATES = ("pending", "sending", "sent", "previewed", "failed", "dead")
# The tables :meth:`Store.count` answers for (the benchmark and tests count rows).
COUNTED_TABLES = frozenset(
    {"items", "quarantine", "predictions", "routes", "outbox", "connector_state"}
)
