-- False once recovery has ended and the instance is promoted.
SELECT pg_is_in_recovery()
