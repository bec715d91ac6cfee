-- Every role but the predefined pg_* ones, with the attributes that grant power.
SELECT rolname, rolsuper, rolcanlogin, rolcreaterole, rolbypassrls
FROM pg_roles
WHERE rolname !~ '^pg_'
ORDER BY rolname
