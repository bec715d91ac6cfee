-- Whether an alert with this dedup key was raised and not resolved since (resolving deletes its groups).
SELECT EXISTS (SELECT FROM ops.alert_groups WHERE dedup_key = %(dedup_key)s)
