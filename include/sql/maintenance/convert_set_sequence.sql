-- Continue the new identity where the old one stopped (or above the largest key, if that is higher); an identity
-- that never handed out a value starts at 1.
SELECT setval(%(sequence_oid)s::oid::regclass, greatest(%(value)s, 1), %(value)s >= 1);
