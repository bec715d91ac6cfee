-- The first acknowledgement counts; the one who gave it owns the incident unless it had an owner.
UPDATE ops.incidents
SET acknowledged_at = %(at)s, acknowledged_by = %(user)s, owner = COALESCE(owner, %(user)s)
WHERE incident_id = %(incident_id)s AND acknowledged_at IS NULL
RETURNING incident_id
