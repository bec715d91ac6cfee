-- Every valid leaf btree index of the user schemas, biggest first, for amcheck's bt_index_check. Partitioned
-- indexes (relkind 'I') hold no data and amcheck refuses them: their partitions' indexes (relkind 'i') are checked.
SELECT c.oid AS index_oid, n.nspname AS schema_name, c.relname AS index_name, pg_relation_size(c.oid) AS size
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = c.relam
WHERE am.amname = 'btree'
  AND c.relkind = 'i'
  AND c.relpersistence <> 't'
  AND i.indisvalid
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY size DESC, n.nspname, c.relname;
