-- One drill's record; a retried run replaces its own.
INSERT INTO ops.restore_drills (drill_id, backup_id, recovery_target, started_at, finished_at, outcome,
                                failed_phase, problems, phases, rto_seconds, sizes)
VALUES (%(drill_id)s, %(backup_id)s, %(recovery_target)s, %(started_at)s, %(finished_at)s, %(outcome)s,
        %(failed_phase)s, %(problems)s, %(phases)s, %(rto_seconds)s, %(sizes)s)
ON CONFLICT (drill_id) DO UPDATE SET
    backup_id = EXCLUDED.backup_id, recovery_target = EXCLUDED.recovery_target, started_at = EXCLUDED.started_at,
    finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, failed_phase = EXCLUDED.failed_phase,
    problems = EXCLUDED.problems, phases = EXCLUDED.phases, rto_seconds = EXCLUDED.rto_seconds,
    sizes = EXCLUDED.sizes
