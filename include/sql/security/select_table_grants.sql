-- Privileges on the tables, views and sequences of the given schemas held by roles other than the owner
-- (grantee 0 is PUBLIC).
SELECT n.nspname AS schema_name,
       c.relname AS table_name,
       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE grantee.rolname END AS grantee,
       acl.privilege_type
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) AS acl
LEFT JOIN pg_roles AS grantee ON grantee.oid = acl.grantee
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname = ANY(%(schemas)s)
  AND acl.grantee <> c.relowner
ORDER BY 1, 2, 3, 4
