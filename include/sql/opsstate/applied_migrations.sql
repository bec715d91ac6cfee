SELECT version FROM ops.schema_migrations
