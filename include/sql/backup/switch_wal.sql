-- Close the current WAL segment so it is archived now; returns the segment that was closed.
SELECT pg_walfile_name(pg_switch_wal()) AS segment
