-- The next batch: the first batch_size rows older than the cutoff after the last key moved, in key order. Walking
-- the primary key keeps every batch an index range scan, however many rows earlier batches removed (restarting
-- from the oldest time each time would wade through their dead index entries).
SELECT max(b.{key_column}) AS last_key, count(*) AS rows, coalesce(sum(pg_column_size(b.*)), 0) AS bytes
FROM (
    SELECT *
    FROM {source}
    WHERE {key_column} > %(after)s AND {time_column} < %(cutoff)s
    ORDER BY {key_column}
    LIMIT %(batch_size)s
) AS b;
