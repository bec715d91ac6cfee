INSERT INTO ops.schema_migrations (version, name) VALUES (%(version)s, %(name)s)
