-- What this session's role may do to one of the archive's tables: move rows (SELECT, INSERT, DELETE), and the
-- partition DDL (detach, attach, rename, create a partition), which needs the owner's privileges on the table and on
-- each of its partitions (`not_owned` lists those it lacks them on), and CREATE on the schema.
SELECT current_user::text AS role_name,
       ARRAY(
           SELECT format('%%s (owner %%s)', r.relname, pg_get_userbyid(r.relowner))
           FROM pg_class AS r
           WHERE (r.oid = c.oid OR r.oid IN (SELECT i.inhrelid FROM pg_inherits AS i WHERE i.inhparent = c.oid))
             AND NOT pg_has_role(r.relowner, 'USAGE')
           ORDER BY r.relname
       ) AS not_owned,
       has_table_privilege(c.oid, 'SELECT') AS can_select,
       has_table_privilege(c.oid, 'INSERT') AS can_insert,
       has_table_privilege(c.oid, 'DELETE') AS can_delete,
       has_schema_privilege(c.relnamespace, 'CREATE') AS can_create
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p');
