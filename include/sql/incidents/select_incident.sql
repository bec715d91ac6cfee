SELECT * FROM ops.incidents WHERE incident_id = %(incident_id)s
