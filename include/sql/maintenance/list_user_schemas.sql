-- The user schemas of the database: every schema but the system's (pg_catalog, information_schema, the TOAST
-- schemas and the temporary schemas of sessions), the schemas the manual's REINDEX DATABASE and ANALYZE VERBOSE cover.
SELECT nspname::text AS schema_name
FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp)'
ORDER BY nspname;
