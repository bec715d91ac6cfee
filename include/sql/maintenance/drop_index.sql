-- Drop an index without blocking writes (autocommit only).
DROP INDEX CONCURRENTLY IF EXISTS {index};
