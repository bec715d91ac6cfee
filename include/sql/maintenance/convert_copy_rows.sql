-- The bulk copy into the new partitioned table, while writers keep writing to the old one.
INSERT INTO {new_table} SELECT * FROM {table} WHERE {key_column} <= %(last_key)s;
