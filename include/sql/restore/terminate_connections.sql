-- Ends every other session on the database; returns how many were asked to end.
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %(name)s AND pid <> pg_backend_pid();
