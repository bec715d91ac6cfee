-- The role initdb created (OID 10): the instance's superuser, whatever the backed-up cluster named it.
SELECT rolname FROM pg_roles WHERE oid = 10
