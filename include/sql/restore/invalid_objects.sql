-- Constraints not validated and indexes not valid: pg_restore left something half-built.
SELECT 'constraint' AS kind, conrelid::regclass::text AS relation, conname::text AS name
FROM pg_constraint
WHERE NOT convalidated AND connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT 'index', i.indrelid::regclass::text, i.indexrelid::regclass::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
WHERE NOT (i.indisvalid AND i.indisready)
  AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
ORDER BY 1, 2, 3;
