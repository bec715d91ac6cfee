-- Where WAL is being written now, and on which timeline.
SELECT pg_current_wal_lsn()::text AS lsn,
       pg_walfile_name(pg_current_wal_lsn()) AS segment,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline
