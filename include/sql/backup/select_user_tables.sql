-- Every table holding rows that pg_dump dumps: plain tables and partitions (leaves), outside system schemas.
-- Partitioned parents are left out, since counting them would count their partitions' rows twice. Biggest first,
-- so a parallel copy (a point-in-time restore's transfer) starts the longest ones early.
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY pg_total_relation_size(c.oid) DESC, 1, 2
