-- Every index of the given schemas with its size and an estimate of its bloat, in percent of its size.
--
-- The estimate compares the pages the index has with the pages its live entries need at its fillfactor, computed
-- from planner statistics (reltuples, pg_stats average widths) the way the well-known btree bloat query does: no
-- index is read, so it is cheap at any size. Deduplication can make an index smaller than estimated (bloat then
-- reads 0). NULL for non-btree indexes and for indexes without statistics yet (ANALYZE provides them).
-- `leftover`: an invalid _ccnew/_ccold copy left by an interrupted REINDEX CONCURRENTLY.
WITH idx AS (
    SELECT i.indexrelid AS index_oid,
           n.nspname AS schema_name,
           t.relname AS table_name,
           c.relname AS index_name,
           am.amname AS access_method,
           i.indisvalid AS valid,
           c.relname ~ '_cc(new|old)[0-9]*$' AND NOT i.indisvalid AS leftover,
           EXISTS (
               SELECT 1 FROM pg_constraint AS x WHERE x.conindid = i.indexrelid AND x.contype = 'x'
           ) AS exclusion,
           pg_relation_size(c.oid) AS bytes,
           c.reltuples,
           coalesce(
               (SELECT split_part(opt, '=', 2)::int FROM unnest(c.reloptions) AS opt WHERE opt LIKE 'fillfactor=%%'),
               90
           ) AS fillfactor,
           current_setting('block_size')::int AS block_size,
           i.indrelid,
           i.indkey
    FROM pg_index AS i
    JOIN pg_class AS c ON c.oid = i.indexrelid
    JOIN pg_class AS t ON t.oid = i.indrelid
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN pg_am AS am ON am.oid = c.relam
    WHERE n.nspname = ANY (%(schemas)s) AND c.relkind = 'i'
),
widths AS (
    -- Key columns are table columns (attnum > 0) or expressions (attnum 0, statistics kept under the index's name).
    SELECT idx.index_oid,
           count(*) AS columns,
           count(s.avg_width) AS columns_with_stats,
           sum((1 - s.null_frac) * s.avg_width) AS data_width,
           coalesce(bool_or(s.null_frac > 0), false) AS nullable
    FROM idx
    CROSS JOIN LATERAL unnest(idx.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
    LEFT JOIN pg_attribute AS a
           ON a.attrelid = CASE WHEN k.attnum = 0 THEN idx.index_oid ELSE idx.indrelid END
          AND a.attnum = CASE WHEN k.attnum = 0 THEN k.position ELSE k.attnum END
    LEFT JOIN pg_stats AS s
           ON s.schemaname = idx.schema_name
          AND s.tablename = CASE WHEN k.attnum = 0 THEN idx.index_name ELSE idx.table_name END
          AND s.attname = a.attname
    GROUP BY idx.index_oid
)
SELECT idx.schema_name,
       idx.table_name,
       idx.index_name,
       idx.access_method,
       idx.valid,
       idx.leftover,
       idx.exclusion,
       idx.bytes,
       CASE
           WHEN idx.access_method = 'btree' AND idx.reltuples >= 0 AND idx.bytes > 0
                AND w.columns = w.columns_with_stats
           THEN greatest(0, round((100 * (1 - est.pages * idx.block_size / idx.bytes))::numeric, 1))
       END AS bloat_percent
FROM idx
JOIN widths AS w USING (index_oid)
CROSS JOIN LATERAL (
    -- Leaf tuple: MAXALIGNed header (8 bytes, 16 with a null bitmap) and data, plus a 4-byte line pointer; a page
    -- offers block_size minus its 24-byte header and 16-byte btree trailer, filled to fillfactor; plus the metapage.
    SELECT 1 + ceil(
               idx.reltuples
               * (CASE WHEN w.nullable THEN 16 ELSE 8 END + 8 * ceil(w.data_width / 8) + 4)
               / ((idx.block_size - 40) * idx.fillfactor / 100.0)
           ) AS pages
) AS est
ORDER BY idx.schema_name, idx.table_name, idx.index_name;
