-- The span of the table's rows (partitions are made for every month in it) and its largest key (the bulk copy takes
-- the rows up to it; rows inserted during the copy have larger keys and are copied at the swap).
SELECT min({time_column}) AS oldest, max({time_column}) AS newest, max({key_column}) AS last_key FROM {table};
