-- Open P1/P2 incidents whose incident_response run has not started yet.
SELECT incident_id FROM ops.incidents
WHERE resolved_at IS NULL AND opened_level IN ('P1', 'P2') AND response_run_id IS NULL
ORDER BY incident_id
