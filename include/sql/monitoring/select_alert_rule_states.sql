-- Every check's state, locked until the evaluation commits, so two evaluations can never both fire a rule.
SELECT rule, state, active_since, fired_at, last_value AS value, evaluated_at, no_data_since, fired_on_no_data
FROM ops.alert_rule_state
FOR UPDATE
