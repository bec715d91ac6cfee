-- The missed resolution deadline has been alerted one level up: the incident is at that level from now on.
UPDATE ops.incidents SET resolution_overdue_alerted_at = %(at)s, level = LEAST(level, %(level)s)
WHERE incident_id = %(incident_id)s AND resolution_overdue_alerted_at IS NULL
RETURNING incident_id
