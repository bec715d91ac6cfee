-- Open an incident for an alert, or join the open one with its dedup key: a repeat is counted, brings the
-- condition back if it had cleared, and raises the level if the repeat is more severe ('P1' < 'P2' < 'P3').
INSERT INTO ops.incidents AS i
    (dedup_key, level, opened_level, source, summary, opened_at, response_due_at, resolution_due_at, last_alert_at)
VALUES
    (%(dedup_key)s, %(level)s, %(level)s, %(source)s, %(summary)s, %(at)s, %(response_due_at)s,
     %(resolution_due_at)s, %(at)s)
ON CONFLICT (dedup_key) WHERE resolved_at IS NULL DO UPDATE SET
    alert_count = i.alert_count + 1,
    last_alert_at = GREATEST(i.last_alert_at, EXCLUDED.last_alert_at),
    condition_resolved_at = NULL,
    level = LEAST(i.level, EXCLUDED.level)
RETURNING incident_id, (xmax = 0) AS opened, level, opened_level,
    -- what it was before this statement: the condition had cleared and this alert brings it back
    (SELECT condition_resolved_at FROM ops.incidents WHERE incident_id = i.incident_id) AS cleared_before
