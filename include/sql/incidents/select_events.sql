SELECT at, kind, actor, message, details FROM ops.incident_events WHERE incident_id = %(incident_id)s
ORDER BY at, event_id
