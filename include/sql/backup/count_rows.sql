-- Rows of one table in the transaction's snapshot.
SELECT count(*) AS row_count FROM {table}
