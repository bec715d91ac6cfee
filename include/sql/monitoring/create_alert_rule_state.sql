-- State of the alert rules between system_health runs: a rule whose condition holds is `pending` from
-- `active_since` and `firing` once it has held for the rule's `for`; a rule whose condition is clear is `ok`. The
-- row stays when the condition clears, so a rerun of an older run finds a newer evaluation and leaves it alone.
-- The advisory lock is the one every DDL of the `ops` schema takes (see security/create_findings_tables.sql), so
-- DAGs starting together do not race on CREATE SCHEMA. Runs on every use: keep the "already exists, skipping"
-- notices out of the task log.
SELECT pg_advisory_xact_lock(hashtext('trading_ops.ops_schema_ddl'));
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.alert_rule_state (
    rule text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('ok', 'pending', 'firing')),
    active_since timestamptz CHECK ((active_since IS NULL) = (state = 'ok')),
    fired_at timestamptz CHECK ((fired_at IS NOT NULL) = (state = 'firing')),
    last_value double precision NOT NULL,
    evaluated_at timestamptz NOT NULL
);
