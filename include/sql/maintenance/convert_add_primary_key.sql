-- A partitioned table's unique constraints must contain the partition key: the primary key becomes (key, time).
ALTER TABLE {new_table} ADD CONSTRAINT {constraint} PRIMARY KEY ({key_column}, {time_column});
