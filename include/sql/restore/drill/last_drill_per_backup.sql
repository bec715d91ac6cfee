-- Per backup, its newest drill (any outcome) and its newest passed one.
SELECT DISTINCT ON (backup_id) backup_id, finished_at, outcome, recovery_target, failed_phase, rto_seconds,
       (SELECT max(p.finished_at) FROM ops.restore_drills p
         WHERE p.backup_id = d.backup_id AND p.outcome = 'passed') AS last_passed_at
FROM ops.restore_drills d
WHERE backup_id IS NOT NULL
ORDER BY backup_id, finished_at DESC
