SELECT NOT EXISTS (SELECT FROM pg_class WHERE relnamespace = 'ops'::regnamespace)
