-- The findings of the latest earlier run of a check (by the runs' own time, so a rerun of an old run compares
-- with the run before it, not with newer ones).
SELECT f.subject, f.severity, f.message, f.first_seen, f.waived
FROM {findings} AS f
WHERE (f.check_name, f.run_id) = (
    SELECT r.check_name, r.run_id
    FROM {runs} AS r
    WHERE r.check_name = %(check)s
      AND r.run_id <> %(run_id)s
      AND r.checked_at <= %(checked_at)s
    ORDER BY r.checked_at DESC, r.recorded_at DESC
    LIMIT 1
)
