-- Incidents (trading_ops.incidents): one row per incident, opened by a P1/P2/P3 alert and joined by the alerts of
-- the same dedup key while it is open; every event of its life in ops.incident_events.
CREATE TABLE IF NOT EXISTS ops.incidents (
    incident_id           bigserial PRIMARY KEY,
    dedup_key             text NOT NULL,
    level                 text NOT NULL CHECK (level IN ('P1', 'P2', 'P3')),
    -- The level it opened at: a missed resolution deadline raises `level` one step, never this.
    opened_level          text NOT NULL CHECK (opened_level IN ('P1', 'P2', 'P3')),
    source                text NOT NULL,
    summary               text NOT NULL,
    opened_at             timestamptz NOT NULL,
    response_due_at       timestamptz NOT NULL,
    resolution_due_at     timestamptz NOT NULL,
    alert_count           integer NOT NULL DEFAULT 1,
    last_alert_at         timestamptz NOT NULL,
    -- Index into the level's escalation chain of the role asked now.
    escalation_position   integer NOT NULL DEFAULT 0,
    acknowledged_at       timestamptz,
    acknowledged_by       text,
    owner                 text,
    -- When the alert that opened it resolved (the rule or the failed task is green again); NULL while it holds.
    condition_resolved_at timestamptz,
    resolved_at           timestamptz,
    resolved_by           text,
    resolution_note       text,
    resolution_overdue_alerted_at timestamptz,
    -- The incident_response run that carries its human steps (P1/P2).
    response_run_id       text,
    post_mortem           text,
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);
-- At most one open incident per dedup key: a repeat joins it.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_dedup_key ON ops.incidents (dedup_key) WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS incidents_opened_at ON ops.incidents (opened_at);

CREATE TABLE IF NOT EXISTS ops.incident_events (
    event_id    bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES ops.incidents (incident_id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    actor       text,
    message     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    -- Names an event that may be recorded twice (a task retried after an answer): the second is dropped.
    event_key   text,
    UNIQUE (incident_id, event_key)
);
CREATE INDEX IF NOT EXISTS incident_events_incident ON ops.incident_events (incident_id, at, event_id);
