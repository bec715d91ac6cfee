-- The server's version as a number (150018): its major picks the pg_restore that talks to it.
SELECT current_setting('server_version_num')::int;
