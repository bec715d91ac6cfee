-- At the swap, under the EXCLUSIVE lock: the rows inserted since the bulk copy took its last key (every row when
-- the table was empty then, last_key NULL).
INSERT INTO {new_table} SELECT * FROM {table} WHERE ({key_column} <= %(last_key)s) IS NOT TRUE;
