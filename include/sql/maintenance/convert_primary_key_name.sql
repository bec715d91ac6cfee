-- The old table's primary key constraint name, which the new table's primary key takes over at the swap.
SELECT con.conname AS name
FROM pg_constraint AS con
JOIN pg_class AS c ON c.oid = con.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND con.contype = 'p';
