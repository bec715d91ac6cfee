-- The `ops` schema and its migration record. Every DDL of the ops state takes this advisory lock for its
-- transaction, so two DAGs starting together neither race on CREATE SCHEMA nor apply a migration twice. Keep the
-- "already exists, skipping" notices out of the task log.
SELECT pg_advisory_xact_lock(hashtext('trading_ops.ops_schema_ddl'));
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
