-- The smallest key at or after from_key of a row older than the cutoff: each key-range batch starts there, so gaps
-- in the keys cost one index probe instead of one empty batch per range.
SELECT min({key_column}) AS key
FROM {source}
WHERE {key_column} >= %(from_key)s AND {key_column} <= %(last_key)s AND {time_column} < %(cutoff)s;
