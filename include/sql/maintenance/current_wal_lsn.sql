-- The WAL insert position; the difference between two readings is the WAL the cluster wrote in between.
SELECT pg_current_wal_lsn()::text AS lsn;
