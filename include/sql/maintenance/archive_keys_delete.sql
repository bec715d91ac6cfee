-- Remove the batch just copied (same snapshot, same predicate as archive_keys_insert.sql).
DELETE FROM {source}
WHERE {key_column} >= %(first_key)s AND {key_column} < %(end_key)s AND {time_column} < %(cutoff)s;
