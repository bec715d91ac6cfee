-- The CREATE INDEX statements recreating the old table's other indexes on the new one, built by the server from
-- pg_get_indexdef so that every part (method, columns, opclasses, INCLUDE, WHERE) is exactly the original. Each gets
-- a temporary name (the original is still taken) that the swap renames back.
SELECT ic.relname AS name,
       left(ic.relname, 58) || '_pnew' AS temporary_name,
       format(
           'CREATE %%sINDEX %%I ON %%I.%%I %%s',
           CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
           left(ic.relname, 58) || '_pnew',
           %(schema)s::text,
           %(new_table)s::text,
           substring(pg_get_indexdef(i.indexrelid) FROM ' USING .*$')
       ) AS statement
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_class AS c ON c.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND NOT i.indisprimary
ORDER BY ic.relname;
