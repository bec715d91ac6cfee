-- Tables, partitioned tables and materialized views of the given schemas, partitions left out: ANALYZE of a
-- partitioned table samples the whole hierarchy and analyzes each partition too.
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
ORDER BY n.nspname, c.relname;
