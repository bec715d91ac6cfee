-- The key range the key-range batches walk: smallest and largest key of the rows older than the cutoff.
SELECT min({key_column}) AS first_key, max({key_column}) AS last_key
FROM {source}
WHERE {time_column} < %(cutoff)s;
