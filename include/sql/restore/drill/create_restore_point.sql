-- The named restore point the drill recovers to (a WAL record), and when it was made.
SELECT pg_create_restore_point(%(name)s)::text AS lsn, clock_timestamp() AS marked_at
