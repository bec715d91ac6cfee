-- Rebuild one index without blocking writes (autocommit only; it cannot run in a transaction block). If it fails
-- half-way it leaves an invalid <index>_ccnew copy, which drop_index.sql removes.
REINDEX INDEX CONCURRENTLY {index};
