-- A check's state after an evaluation: ok, pending or firing (`rule` is the rule's name, with the series' labels
-- for a per-host metric: cpu_usage_percent_critical{instance="db-1:9100"}).
INSERT INTO ops.alert_rule_state
    (rule, state, active_since, fired_at, last_value, evaluated_at, no_data_since, fired_on_no_data)
VALUES
    (%(rule)s, %(state)s, %(active_since)s, %(fired_at)s, %(value)s, %(evaluated_at)s, %(no_data_since)s,
     %(fired_on_no_data)s)
ON CONFLICT (rule) DO UPDATE SET
    state = EXCLUDED.state,
    active_since = EXCLUDED.active_since,
    fired_at = EXCLUDED.fired_at,
    last_value = EXCLUDED.last_value,
    evaluated_at = EXCLUDED.evaluated_at,
    no_data_since = EXCLUDED.no_data_since,
    fired_on_no_data = EXCLUDED.fired_on_no_data
