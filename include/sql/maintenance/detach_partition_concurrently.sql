-- Detach without blocking writers (SHARE UPDATE EXCLUSIVE on the parent); cannot run inside a transaction block.
-- If it is interrupted, the partition stays "detach pending" until DETACH ... FINALIZE.
ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY;
