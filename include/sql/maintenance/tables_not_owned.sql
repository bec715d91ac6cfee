-- Tables, partitions and materialized views of the given schemas whose owner's privileges this session's role lacks:
-- REINDEX of their indexes would fail ("must be owner"), and ANALYZE would skip them with nothing but a warning.
SELECT current_user::text AS role_name,
       n.nspname AS schema_name,
       c.relname AS table_name,
       pg_get_userbyid(c.relowner) AS owner_name
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'm') AND NOT pg_has_role(c.relowner, 'USAGE')
ORDER BY n.nspname, c.relname;
