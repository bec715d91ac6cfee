-- The sequence feeding the key column of a table, if any: an identity's own sequence (kind 'i') or a serial's
-- owned sequence (kind 'a'), with the last value it handed out.
SELECT s.oid AS sequence_oid,
       sn.nspname AS sequence_schema,
       s.relname AS sequence_name,
       d.deptype AS kind,
       pg_sequence_last_value(s.oid) AS last_value
FROM pg_depend AS d
JOIN pg_class AS s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace AS sn ON sn.oid = s.relnamespace
JOIN pg_class AS c ON c.oid = d.refobjid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = %(key_column)s
  AND d.classid = 'pg_class'::regclass AND d.deptype IN ('i', 'a');
