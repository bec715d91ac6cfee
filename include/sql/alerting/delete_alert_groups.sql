-- A resolved condition ends its grouping: the next occurrence is news and is sent at once.
DELETE FROM ops.alert_groups WHERE dedup_key = %(dedup_key)s
