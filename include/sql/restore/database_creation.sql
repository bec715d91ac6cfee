-- How a database was created, which a new database must repeat to hold the same data the same way: encoding,
-- locale and tablespace. The locale columns differ between major versions: the whole row comes as JSON.
SELECT pg_encoding_to_char(d.encoding) AS encoding, t.spcname AS tablespace, to_jsonb(d) AS settings
FROM pg_database d
JOIN pg_tablespace t ON t.oid = d.dattablespace
WHERE d.datname = %(name)s;
