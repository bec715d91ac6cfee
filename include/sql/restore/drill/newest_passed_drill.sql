-- The newest passed drill (its backup is the newest one proven to restore).
SELECT drill_id, backup_id, finished_at, rto_seconds
FROM ops.restore_drills
WHERE outcome = 'passed'
ORDER BY finished_at DESC
LIMIT 1
