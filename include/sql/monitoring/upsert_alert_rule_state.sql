-- A rule's state after an evaluation: ok, pending or firing.
INSERT INTO ops.alert_rule_state (rule, state, active_since, fired_at, last_value, evaluated_at)
VALUES (%(rule)s, %(state)s, %(active_since)s, %(fired_at)s, %(value)s, %(evaluated_at)s)
ON CONFLICT (rule) DO UPDATE SET
    state = EXCLUDED.state,
    active_since = EXCLUDED.active_since,
    fired_at = EXCLUDED.fired_at,
    last_value = EXCLUDED.last_value,
    evaluated_at = EXCLUDED.evaluated_at
