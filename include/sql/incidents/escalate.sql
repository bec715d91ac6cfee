-- Move the incident to a later step of its escalation chain (never back).
UPDATE ops.incidents SET escalation_position = %(position)s
WHERE incident_id = %(incident_id)s AND escalation_position < %(position)s AND acknowledged_at IS NULL
    AND resolved_at IS NULL
RETURNING incident_id
