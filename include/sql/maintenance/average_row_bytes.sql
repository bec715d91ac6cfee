-- The average stored size of a row of a table (heap and TOAST over the planner's row count; for a partitioned table,
-- summed over its partitions), to report the bytes the batches moved without measuring each row.
WITH target AS (
    SELECT format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass AS oid
)
SELECT coalesce(sum(pg_table_size(c.oid)) / nullif(sum(greatest(c.reltuples, 0)), 0), 0)::bigint AS bytes
FROM pg_class AS c, target
WHERE c.relkind = 'r'
  AND (c.oid = target.oid OR c.oid IN (SELECT relid FROM pg_partition_tree(target.oid) WHERE isleaf));
