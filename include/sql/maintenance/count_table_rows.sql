-- The exact number of rows of one table (the plan counts the partitions it would move whole).
SELECT count(*) AS rows FROM {table};
