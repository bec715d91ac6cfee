-- Remove the page batch just copied (same snapshot, same predicate as archive_pages_insert.sql).
DELETE FROM {table}
WHERE ctid >= ('(' || %(first_page)s::bigint || ',0)')::tid
  AND ctid < ('(' || %(end_page)s::bigint || ',0)')::tid
  AND {time_column} < %(cutoff)s;
