-- The drills, newest first.
SELECT drill_id, backup_id, recovery_target, started_at, finished_at, outcome, failed_phase, problems, phases,
       rto_seconds, sizes
FROM ops.restore_drills
ORDER BY finished_at DESC
LIMIT %(limit)s
