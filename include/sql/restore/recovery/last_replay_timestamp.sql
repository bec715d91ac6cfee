-- The commit time of the last transaction replayed: how far recovery got.
SELECT pg_last_xact_replay_timestamp()
