-- Whether the connecting role may do what a swap does: create the staging database, and rename the target (which
-- takes its ownership and CREATEDB, or a superuser).
SELECT r.rolsuper OR (r.rolcreatedb AND pg_has_role(r.oid, d.datdba, 'USAGE'))
FROM pg_roles r, pg_database d
WHERE r.rolname = current_user AND d.datname = %(name)s;
