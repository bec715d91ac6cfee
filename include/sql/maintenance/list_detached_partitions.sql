-- Tables named like a monthly partition of the table ({table}_pYYYYMM) that are not attached to anything: a
-- partition whose archiving was interrupted after DETACH and before it reached the archive.
SELECT c.relname AS name,
       pg_total_relation_size(c.oid) AS bytes,
       greatest(c.reltuples, 0)::bigint AS rows_estimate
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
  AND c.relkind = 'r'
  AND NOT c.relispartition
  AND left(c.relname, length(%(table)s) + 2) = %(table)s || '_p'
  AND substr(c.relname, length(%(table)s) + 3) ~ '^[0-9][0-9][0-9][0-9][0-9][0-9]$'
ORDER BY c.relname;
