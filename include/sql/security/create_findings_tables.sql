-- The findings history of the security checks: one row per check run, one per finding of that run.
-- The advisory lock keeps two DAGs that start together from racing on CREATE SCHEMA.
SELECT pg_advisory_xact_lock(hashtext('trading_ops.ops_schema_ddl'));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {runs} (
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
CREATE INDEX IF NOT EXISTS security_check_runs_checked_at_idx ON {runs} (check_name, checked_at);
CREATE TABLE IF NOT EXISTS {findings} (
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
    FOREIGN KEY (check_name, run_id) REFERENCES {runs} (check_name, run_id) ON DELETE CASCADE
);
