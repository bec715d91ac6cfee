-- The partitions of a range-partitioned table, oldest first, with their bounds read back from the catalog (NULL for
-- DEFAULT and MINVALUE/MAXVALUE bounds), whether a DETACH CONCURRENTLY of them was interrupted, and their size.
SELECT c.relname AS name,
       bounds[1]::timestamptz AS lower,
       bounds[2]::timestamptz AS upper,
       i.inhdetachpending AS detach_pending,
       pg_total_relation_size(c.oid) AS bytes,
       greatest(c.reltuples, 0)::bigint AS rows_estimate
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(
    pg_get_expr(c.relpartbound, c.oid), $$^FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)$$
) AS bounds
WHERE i.inhparent = (
    SELECT p.oid FROM pg_class AS p JOIN pg_namespace AS n ON n.oid = p.relnamespace
    WHERE n.nspname = %(schema)s AND p.relname = %(table)s
)
ORDER BY lower NULLS FIRST, c.relname;
