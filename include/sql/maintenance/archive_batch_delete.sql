-- Remove the batch just copied (same snapshot, same predicate as archive_batch_insert.sql).
DELETE FROM {source}
WHERE {key_column} > %(after)s AND {key_column} <= %(last_key)s AND {time_column} < %(cutoff)s;
