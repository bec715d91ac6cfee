-- Every check's state, for reading only (the Ops page): no lock, so a page view never delays an evaluation.
SELECT rule, state, active_since, fired_at, last_value AS value, evaluated_at, no_data_since, fired_on_no_data
FROM ops.alert_rule_state
ORDER BY rule
