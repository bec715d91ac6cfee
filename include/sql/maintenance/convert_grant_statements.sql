-- The GRANT statements giving the new table the old table's privileges, built by the server from the old ACL.
SELECT format(
           'GRANT %%s ON TABLE %%I.%%I TO %%s%%s',
           acl.privilege_type,
           %(schema)s::text,
           %(new_table)s::text,
           CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(acl.grantee)) END,
           CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
       ) AS statement
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) AS acl
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND acl.grantee <> c.relowner;
