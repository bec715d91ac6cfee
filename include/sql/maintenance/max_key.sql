-- The largest key of a table.
SELECT max({key_column}) AS last_key FROM {table};
