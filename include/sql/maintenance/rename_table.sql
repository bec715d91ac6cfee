-- Rename a table in place (same schema).
ALTER TABLE {table} RENAME TO {new_name};
