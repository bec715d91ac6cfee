-- ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET settings of the database ("name=value" each; the
-- role is NULL for the database-wide ones), in the order they were set.
SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role_name, c.setting
FROM pg_db_role_setting s
JOIN pg_database d ON d.oid = s.setdatabase
CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS c(setting, position)
WHERE d.datname = %(name)s
ORDER BY 1 NULLS FIRST, c.position;
