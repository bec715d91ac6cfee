-- The server settings the policy requires, as pg_settings reports them (on/off, names of methods).
SELECT name, setting
FROM pg_settings
WHERE name = ANY(%(names)s)
