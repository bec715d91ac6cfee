-- A table's size in pages now (page batches stop there: later pages hold rows inserted during the run) and the
-- planner's row count (rows per page sets how many pages make a batch).
SELECT pg_relation_size(c.oid) / current_setting('block_size')::int AS pages, greatest(c.reltuples, 0) AS rows
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s;
