-- Every row of one ops state table of the old database, as one JSON array.
SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM {table} AS t
