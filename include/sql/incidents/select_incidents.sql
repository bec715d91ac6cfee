-- Newest first; open ones only when asked.
SELECT * FROM ops.incidents
WHERE NOT %(open_only)s OR resolved_at IS NULL
ORDER BY opened_at DESC, incident_id DESC
LIMIT %(limit)s
