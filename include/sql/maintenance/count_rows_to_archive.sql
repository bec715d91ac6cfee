-- The rows older than the cutoff: how many (for progress, and to choose how to scan) and the oldest one's time
-- (archive partitions are made down to its month). An index on the time column answers it from the index alone.
SELECT count(*) AS rows, min({time_column}) AS oldest
FROM {source}
WHERE {time_column} < %(cutoff)s;
