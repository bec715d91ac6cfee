-- Both tables' row counts, compared before the old table is dropped.
SELECT (SELECT count(*) FROM {table}) AS old_rows, (SELECT count(*) FROM {new_table}) AS new_rows;
