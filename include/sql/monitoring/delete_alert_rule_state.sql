-- A rule's condition cleared: it is neither pending nor firing any more.
DELETE FROM ops.alert_rule_state WHERE rule = %(rule)s
