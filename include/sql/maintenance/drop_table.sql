-- Drop a table that the caller has just emptied or replaced, in the same transaction.
DROP TABLE {table};
