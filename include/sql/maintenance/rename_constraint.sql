-- Rename a constraint of a table (catalog only).
ALTER TABLE {table} RENAME CONSTRAINT {constraint} TO {new_name};
