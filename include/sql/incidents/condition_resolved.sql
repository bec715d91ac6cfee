-- The alert of the open incident with this dedup key has resolved; a P3 incident is resolved with it.
UPDATE ops.incidents
SET condition_resolved_at = %(at)s,
    resolved_at = CASE WHEN level = 'P3' THEN %(at)s END,
    resolved_by = CASE WHEN level = 'P3' THEN 'auto: its alert resolved' END
WHERE dedup_key = %(dedup_key)s AND resolved_at IS NULL AND condition_resolved_at IS NULL
RETURNING incident_id, level
