-- The new partitioned table, under a temporary name, with the old one's columns, defaults, identity, CHECK and NOT
-- NULL constraints, storage and comments; indexes are recreated separately because the primary key must now
-- include the partition key.
CREATE TABLE {new_table} (LIKE {table} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE ({time_column});
