-- Copy one key-range batch into the archive: the rows older than the cutoff whose key is in [first_key, first_key +
-- batch_size), so never more than batch_size rows (keys are unique integers), found by a primary key range scan
-- however many rows earlier batches removed. It runs in one REPEATABLE READ transaction with the delete: both see
-- the same snapshot, so the rows copied are exactly the rows deleted, and a row changed meanwhile by another session
-- makes the delete fail with a serialization error (the batch is rolled back and retried).
INSERT INTO {archive}
SELECT *
FROM {source}
WHERE {key_column} >= %(first_key)s AND {key_column} < %(end_key)s AND {time_column} < %(cutoff)s;
