-- Every sequence a column takes its values from, with the value the next nextval() starts after: sequences OWNED
-- BY a column (serial, identity) and any sequence a column default calls nextval() on, owned or not. Integer
-- columns only (max() is compared with the sequence). A partition fed by the same sequence as its partitioned
-- parent is left out: the parent's max() covers its rows.
WITH feeds AS (
    -- OWNED BY (deptype 'a') and identity (deptype 'i') sequences: the sequence depends on the column.
    SELECT d.objid AS seq_oid, d.refobjid AS table_oid, d.refobjsubid AS attnum
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass
      AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i')
      AND d.refobjsubid > 0
    UNION
    -- Defaults calling nextval('name'::regclass): the default depends on the sequence.
    SELECT d.refobjid, ad.adrelid, ad.adnum
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
    UNION
    -- Defaults calling nextval('name'::text) are late-bound and record no dependency: resolve the name now.
    SELECT to_regclass(m[1]), ad.adrelid, ad.adnum
    FROM pg_attrdef ad
    CROSS JOIN LATERAL regexp_match(pg_get_expr(ad.adbin, ad.adrelid), $re$nextval\('([^']+)'::text\)$re$) AS m
    WHERE to_regclass(m[1]) IS NOT NULL
),
column_feeds AS (
    SELECT f.seq_oid, f.table_oid, att.attname, tab.relispartition
    FROM feeds f
    JOIN pg_class seq ON seq.oid = f.seq_oid AND seq.relkind = 'S'
    JOIN pg_class tab ON tab.oid = f.table_oid AND tab.relkind IN ('r', 'p')
    JOIN pg_attribute att ON att.attrelid = f.table_oid AND att.attnum = f.attnum AND NOT att.attisdropped
    JOIN pg_type ty ON ty.oid = att.atttypid
    WHERE coalesce(nullif(ty.typbasetype, 0), ty.oid)
          IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype)
)
SELECT seq_ns.nspname AS sequence_schema,
       seq.relname AS sequence_name,
       tab_ns.nspname AS table_schema,
       tab.relname AS table_name,
       cf.attname AS column_name,
       CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END AS last_used
FROM column_feeds cf
JOIN pg_class seq ON seq.oid = cf.seq_oid
JOIN pg_namespace seq_ns ON seq_ns.oid = seq.relnamespace
JOIN pg_class tab ON tab.oid = cf.table_oid
JOIN pg_namespace tab_ns ON tab_ns.oid = tab.relnamespace
CROSS JOIN LATERAL (
    SELECT ps.last_value IS NOT NULL AS is_called, coalesce(ps.last_value, ps.start_value) AS last_value
    FROM pg_sequences ps
    -- A descending sequence would be compared with min(), not max(): not checked.
    WHERE ps.schemaname = seq_ns.nspname AND ps.sequencename = seq.relname AND ps.increment_by > 0
) AS s
WHERE NOT (
    cf.relispartition
    AND EXISTS (
        SELECT 1
        FROM column_feeds parent
        JOIN pg_partition_ancestors(cf.table_oid) AS ancestor ON ancestor.relid = parent.table_oid
        WHERE parent.seq_oid = cf.seq_oid AND parent.attname = cf.attname AND parent.table_oid <> cf.table_oid
    )
)
ORDER BY 1, 2, 3, 4, 5;
