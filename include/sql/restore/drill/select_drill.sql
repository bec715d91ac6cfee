-- One drill's record.
SELECT drill_id, backup_id, recovery_target, started_at, finished_at, outcome, failed_phase, problems, phases,
       rto_seconds, sizes
FROM ops.restore_drills
WHERE drill_id = %(drill_id)s
