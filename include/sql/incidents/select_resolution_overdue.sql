-- Open incidents past their resolution deadline at %(at)s, not yet alerted for it.
SELECT * FROM ops.incidents
WHERE resolved_at IS NULL AND resolution_due_at <= %(at)s AND resolution_overdue_alerted_at IS NULL
    AND opened_level IN ('P1', 'P2')
ORDER BY incident_id
