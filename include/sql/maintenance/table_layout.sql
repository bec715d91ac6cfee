-- What the archive needs to know about a table: whether it is range-partitioned on the time column, whether it has
-- a DEFAULT partition (which rules out DETACH PARTITION CONCURRENTLY), its columns in order with their types (rows
-- are copied with SELECT *, and ATTACH PARTITION needs the same columns), their names, and which are integers (the
-- batches walk an integer key). No row: the table does not exist.
SELECT c.relkind = 'p' AS partitioned,
       coalesce(pg_get_partkeydef(c.oid) = 'RANGE (' || quote_ident(%(time_column)s) || ')', false) AS by_time,
       EXISTS (
           SELECT 1
           FROM pg_inherits AS i
           JOIN pg_class AS p ON p.oid = i.inhrelid
           WHERE i.inhparent = c.oid AND pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT'
       ) AS has_default_partition,
       ARRAY(
           SELECT format('%%I %%s', a.attname, format_type(a.atttypid, a.atttypmod))
           FROM pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum
       ) AS columns,
       ARRAY(
           SELECT a.attname::text FROM pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum
       ) AS column_names,
       ARRAY(
           SELECT a.attname::text FROM pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             AND a.atttypid IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
       ) AS integer_columns
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p');
