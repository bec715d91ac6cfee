-- Settings of every maintenance session. lock_timeout makes DDL give up instead of waiting in the lock queue, where
-- it would stall every writer queued behind it; UTC makes month boundaries and partition bounds mean the same
-- instant whatever the server's default time zone.
SELECT set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('TimeZone', 'UTC', false),
       set_config('application_name', %(application_name)s, false);
