-- Refresh one table's planner statistics; VERBOSE reports each table and partition sampled as INFO messages,
-- which the PostgresHook's notice handler writes to the task log.
ANALYZE (VERBOSE %(verbose)s) {table};
