-- The smallest key at or after from_key of a row older than the cutoff: after an empty key range the batches jump
-- there, so sparse keys cost one index scan over the gap instead of one query per empty range.
SELECT min({key_column}) AS key
FROM {source}
WHERE {key_column} >= %(from_key)s AND {key_column} <= %(last_key)s AND {time_column} < %(cutoff)s;
