-- Copy one batch into the archive. It runs in one REPEATABLE READ transaction with the bounds query and the delete:
-- all three see the same snapshot, so the rows copied are exactly the rows deleted, and a row changed meanwhile by
-- another session makes the delete fail with a serialization error (the batch is rolled back and retried).
INSERT INTO {archive}
SELECT *
FROM {source}
WHERE {key_column} > %(after)s AND {key_column} <= %(last_key)s AND {time_column} < %(cutoff)s;
