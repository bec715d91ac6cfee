-- The rows older than the cutoff: how many, the oldest one's time (archive partitions are made down to its month)
-- and the smallest key (batches walk the key upward from there).
SELECT count(*) AS rows, min({time_column}) AS oldest, min({key_column}) AS first_key
FROM {source}
WHERE {time_column} < %(cutoff)s;
