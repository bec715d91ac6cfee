-- The findings of every check's newest run, most severe first: what each check sees now.
SELECT f.check_name, f.run_id, f.subject, f.severity, f.message, f.status, f.first_seen, f.waived, f.waiver_reason,
       f.waiver_expires
FROM {findings} AS f
JOIN (
    SELECT DISTINCT ON (r.check_name) r.check_name, r.run_id
    FROM {runs} AS r
    ORDER BY r.check_name, r.checked_at DESC, r.recorded_at DESC
) AS newest USING (check_name, run_id)
ORDER BY f.check_name, array_position(ARRAY['critical', 'warning', 'info'], f.severity), f.subject
