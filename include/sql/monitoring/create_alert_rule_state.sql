-- State of the alert rules between system_health runs: a rule whose condition holds is `pending` from
-- `active_since` and `firing` once it has held for the rule's `for`; the row goes when the condition clears.
-- Runs on every use: keep the "already exists, skipping" notices out of the task log.
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.alert_rule_state (
    rule text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('pending', 'firing')),
    active_since timestamptz NOT NULL,
    fired_at timestamptz,
    last_value double precision NOT NULL,
    evaluated_at timestamptz NOT NULL
);
