-- The rows older than the cutoff: how many (for progress), the oldest one's time (archive partitions are made down
-- to its month) and the key range the batches walk.
SELECT count(*) AS rows,
       min({time_column}) AS oldest,
       min({key_column}) AS first_key,
       max({key_column}) AS last_key
FROM {source}
WHERE {time_column} < %(cutoff)s;
