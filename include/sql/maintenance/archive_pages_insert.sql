-- Copy one page batch into the archive: the rows older than the cutoff stored in pages [first_page, end_page) of
-- one table (a TID range scan reads just those pages, in order, like a sequential scan in slices). It runs in one
-- REPEATABLE READ transaction with archive_pages_delete.sql: the same snapshot, so exactly the same rows, and a row
-- changed meanwhile by another session makes the delete fail with a serialization error (rolled back, retried).
INSERT INTO {archive}
SELECT *
FROM {table}
WHERE ctid >= ('(' || %(first_page)s::bigint || ',0)')::tid
  AND ctid < ('(' || %(end_page)s::bigint || ',0)')::tid
  AND {time_column} < %(cutoff)s;
