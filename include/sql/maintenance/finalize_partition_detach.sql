-- Complete a DETACH PARTITION CONCURRENTLY that was cancelled or interrupted.
ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE;
