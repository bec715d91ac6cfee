-- Rename a sequence.
ALTER SEQUENCE {sequence} RENAME TO {new_name};
