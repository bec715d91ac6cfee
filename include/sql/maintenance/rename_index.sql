-- Rename an index (a constraint's index renames the constraint too).
ALTER INDEX {index} RENAME TO {new_name};
