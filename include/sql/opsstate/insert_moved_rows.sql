-- Rows moved from the old database; a row the new database already has (state written while the old one could
-- not be reached) is newer and stays.
INSERT INTO {table} ({columns})
SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %(rows)s)
ON CONFLICT DO NOTHING
