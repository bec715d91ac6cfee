-- One event of an incident's timeline; an event_key already recorded (a retried task) is dropped.
INSERT INTO ops.incident_events (incident_id, at, kind, actor, message, details, event_key)
VALUES (%(incident_id)s, %(at)s, %(kind)s, %(actor)s, %(message)s, %(details)s, %(event_key)s)
ON CONFLICT (incident_id, event_key) DO NOTHING
RETURNING event_id
