-- The ops state as it lived in trading_db's `ops` schema before it had a database of its own: the alert grouping
-- window, the alert rules' state and the security findings history. IF NOT EXISTS adopts tables of a database that
-- already held them, so pointing the state at an old database upgrades it in place.
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

-- A rule whose condition holds is `pending` from `active_since` and `firing` once it has held for the rule's
-- `for`; a rule whose condition is clear is `ok`. The row stays when the condition clears, so a rerun of an older
-- run finds a newer evaluation and leaves it alone.
CREATE TABLE IF NOT EXISTS ops.alert_rule_state (
    rule text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('ok', 'pending', 'firing')),
    active_since timestamptz CHECK ((active_since IS NULL) = (state = 'ok')),
    fired_at timestamptz CHECK ((fired_at IS NOT NULL) = (state = 'firing')),
    last_value double precision NOT NULL,
    evaluated_at timestamptz NOT NULL
);

-- The findings history of the security checks: one row per check run, one per finding of that run.
CREATE TABLE IF NOT EXISTS ops.security_check_runs (
    check_name       text NOT NULL,
    run_id           text NOT NULL,
    dag_id           text NOT NULL,
    checked_at       timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    new_count        integer NOT NULL,
    persisting_count integer NOT NULL,
    resolved_count   integer NOT NULL,
    waived_count     integer NOT NULL,
    -- Findings of the previous run that this run no longer sees (subject, severity, message of each).
    resolved         jsonb NOT NULL,
    PRIMARY KEY (check_name, run_id)
);
CREATE INDEX IF NOT EXISTS security_check_runs_checked_at_idx ON ops.security_check_runs (check_name, checked_at);
CREATE TABLE IF NOT EXISTS ops.security_findings (
    check_name     text NOT NULL,
    run_id         text NOT NULL,
    subject        text NOT NULL,
    severity       text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    message        text NOT NULL,
    evidence       jsonb NOT NULL,
    status         text NOT NULL CHECK (status IN ('new', 'persisting')),
    first_seen     timestamptz NOT NULL,
    waived         boolean NOT NULL,
    waiver_reason  text,
    waiver_expires date,
    PRIMARY KEY (check_name, run_id, subject),
    FOREIGN KEY (check_name, run_id) REFERENCES ops.security_check_runs (check_name, run_id) ON DELETE CASCADE
);

-- The one-time moves of ops state out of another database (trading_db): which source, when, how many rows.
CREATE TABLE IF NOT EXISTS ops.state_moves (
    source    text PRIMARY KEY,
    moved_at  timestamptz NOT NULL DEFAULT now(),
    row_counts jsonb NOT NULL
);
