-- Sequences owned by a table column (serial / identity), with the value the next nextval() starts after.
SELECT seq_ns.nspname AS sequence_schema,
       seq.relname AS sequence_name,
       tab_ns.nspname AS table_schema,
       tab.relname AS table_name,
       att.attname AS column_name,
       CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END AS last_used
FROM pg_depend d
JOIN pg_class seq ON seq.oid = d.objid AND seq.relkind = 'S'
JOIN pg_namespace seq_ns ON seq_ns.oid = seq.relnamespace
JOIN pg_class tab ON tab.oid = d.refobjid
JOIN pg_namespace tab_ns ON tab_ns.oid = tab.relnamespace
JOIN pg_attribute att ON att.attrelid = tab.oid AND att.attnum = d.refobjsubid
CROSS JOIN LATERAL (
    SELECT ps.last_value IS NOT NULL AS is_called, coalesce(ps.last_value, ps.start_value) AS last_value
    FROM pg_sequences ps
    WHERE ps.schemaname = seq_ns.nspname AND ps.sequencename = seq.relname
) AS s
WHERE d.classid = 'pg_class'::regclass
  AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i')
ORDER BY 1, 2;
