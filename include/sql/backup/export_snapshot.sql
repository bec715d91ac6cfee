-- Run first in a REPEATABLE READ transaction kept open: pg_dump --snapshot reads the same snapshot, so the row
-- counts taken in this transaction match the dump exactly.
SELECT pg_export_snapshot() AS snapshot,
       pg_current_wal_lsn()::text AS lsn,
       clock_timestamp() AS snapshot_time
