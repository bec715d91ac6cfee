-- What the backup DAGs need from the connection's user, read without changing anything: the REPLICATION
-- attribute and a WAL sender for pg_basebackup, and the right to call pg_switch_wal().
SELECT current_user AS user_name,
       r.rolreplication OR r.rolsuper AS can_replicate,
       current_setting('max_wal_senders')::int AS max_wal_senders,
       has_function_privilege('pg_switch_wal()', 'EXECUTE') AS can_switch_wal,
       current_setting('server_version_num')::int AS server_version_num
FROM pg_roles r
WHERE r.rolname = current_user
