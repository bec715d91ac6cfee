-- The grouping window of alert notifications: one row per distinct alert (dedup key, level, source, summary).
-- The advisory lock is the one every DDL of the `ops` schema takes (see security/create_findings_tables.sql), so
-- DAGs starting together do not race on CREATE SCHEMA. Runs on every use: keep the "already exists, skipping"
-- notices out of the task log.
SELECT pg_advisory_xact_lock(hashtext('trading_ops.ops_schema_ddl'));
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.alert_groups (
    group_key text PRIMARY KEY,
    dedup_key text NOT NULL,
    level text NOT NULL,
    source text NOT NULL,
    summary text NOT NULL,
    first_seen_at timestamptz NOT NULL,
    -- '-infinity' when the latest notification reached no destination or not all of them
    last_sent_at timestamptz NOT NULL,
    -- whether the latest occurrence was sent (true) or grouped into the previous notification (false)
    sent boolean NOT NULL,
    grouped_since_sent integer NOT NULL DEFAULT 0,
    -- how many occurrences the latest sent notification stands for, besides itself
    grouped_before_sent integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alert_groups_dedup_key ON ops.alert_groups (dedup_key);
