-- Attach a table as the partition [lower, upper). Without a CHECK constraint implying these bounds PostgreSQL
-- scans the table to prove them; DETACH CONCURRENTLY leaves exactly such a constraint behind.
ALTER TABLE {parent} ATTACH PARTITION {partition} FOR VALUES FROM (%(lower)s) TO (%(upper)s);
