-- The newest runs of every check (security and capacity), newest first per check, with their counts: what the Ops
-- page shows as new / persisting / resolved / waived over the last runs.
SELECT check_name, run_id, dag_id, checked_at, new_count, persisting_count, resolved_count, waived_count
FROM (
    SELECT r.*, row_number() OVER (PARTITION BY r.check_name ORDER BY r.checked_at DESC, r.recorded_at DESC) AS age
    FROM {runs} AS r
) AS ranked
WHERE age <= %(runs_per_check)s
ORDER BY check_name, checked_at DESC
