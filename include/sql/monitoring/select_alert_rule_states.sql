-- Every rule's state, locked until the evaluation commits, so two evaluations can never both fire a rule.
SELECT rule, state, active_since, fired_at, evaluated_at FROM ops.alert_rule_state FOR UPDATE
