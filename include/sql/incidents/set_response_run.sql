UPDATE ops.incidents SET response_run_id = %(run_id)s
WHERE incident_id = %(incident_id)s AND (response_run_id IS NULL OR response_run_id = %(run_id)s)
RETURNING incident_id
