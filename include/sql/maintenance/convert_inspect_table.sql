-- What decides whether a table can be converted to the partitioned layout as it is: its time bounds and largest
-- key, whether this session may replace it (owner), and what the conversion does not carry over (user triggers,
-- row-level security, unique indexes without the time column, which a partitioned table cannot enforce).
SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS owned,
       EXISTS (SELECT 1 FROM pg_trigger AS t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS has_triggers,
       c.relrowsecurity AS row_security,
       ARRAY(
           SELECT ic.relname
           FROM pg_index AS i
           JOIN pg_class AS ic ON ic.oid = i.indexrelid
           WHERE i.indrelid = c.oid AND i.indisunique AND NOT i.indisprimary
             AND NOT EXISTS (
                 SELECT 1 FROM pg_attribute AS a
                 WHERE a.attrelid = c.oid AND a.attname = %(time_column)s AND a.attnum = ANY (i.indkey::int2[])
             )
       ) AS unique_without_time
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s;
