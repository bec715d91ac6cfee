UPDATE ops.incidents SET post_mortem = %(post_mortem)s WHERE incident_id = %(incident_id)s
