-- Keys present in both the live table and its archive: a row must live in exactly one of them.
SELECT count(*) FROM {source} AS s WHERE EXISTS (SELECT 1 FROM {archive} AS a WHERE a.{key} = s.{key});
