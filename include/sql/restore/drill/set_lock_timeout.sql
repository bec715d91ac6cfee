-- For the session: the drill's SHARE locks wait at most this long.
SELECT set_config('lock_timeout', %(timeout)s, false)
