-- Which of the ops state tables the old database still has, in the order they can be copied (parents first).
SELECT t.name
FROM unnest(ARRAY['alert_groups', 'alert_rule_state', 'security_check_runs', 'security_findings'])
    WITH ORDINALITY AS t (name, position)
WHERE to_regclass(format('ops.%I', t.name)) IS NOT NULL
ORDER BY t.position
