-- The database's privileges one by one (the defaults spelled out when it has no ACL); PUBLIC is the grantee 0.
SELECT pg_get_userbyid(a.grantor) AS grantor,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type,
       a.is_grantable
FROM pg_database d
CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) AS a
WHERE d.datname = %(name)s
ORDER BY 1, 2, 3;
