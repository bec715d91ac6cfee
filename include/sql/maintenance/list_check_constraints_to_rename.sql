-- ATTACH PARTITION requires the table to carry each CHECK constraint of the parent under the parent's name. A
-- partition detached from market_data carries market_data's constraints (market_data_volume_check) where the
-- archive's are named after it (market_data_archive_volume_check): the same definitions under other names.
-- Returns (name on the table, name on the parent) pairs to rename; catalog-only, no scan.
SELECT child.conname AS name, parent.conname AS parent_name
FROM pg_constraint AS parent
JOIN pg_constraint AS child
  ON child.contype = 'c'
 AND child.conname <> parent.conname
 AND pg_get_constraintdef(child.oid) = pg_get_constraintdef(parent.oid)
WHERE parent.contype = 'c'
  AND NOT parent.connoinherit
  AND parent.conrelid = (
      SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
      WHERE n.nspname = %(schema)s AND c.relname = %(parent)s
  )
  AND child.conrelid = (
      SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
      WHERE n.nspname = %(schema)s AND c.relname = %(table)s
  )
  AND NOT EXISTS (
      SELECT 1 FROM pg_constraint AS taken WHERE taken.conrelid = child.conrelid AND taken.conname = parent.conname
  );
