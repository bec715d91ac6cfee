UPDATE ops.incidents
SET resolved_at = %(at)s, resolved_by = %(user)s, resolution_note = %(note)s,
    condition_resolved_at = COALESCE(condition_resolved_at, %(at)s)
WHERE incident_id = %(incident_id)s AND resolved_at IS NULL
RETURNING incident_id
