-- Writers wait (readers do not) until the drill's counts and restore point are committed.
LOCK TABLE {table} IN SHARE MODE
