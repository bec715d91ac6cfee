-- Exact row count of one table, compared with the backup manifest's count.
SELECT count(*) FROM {table};
