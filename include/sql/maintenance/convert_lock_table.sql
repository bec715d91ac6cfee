-- Hold writers (readers go on) for the few statements of the swap, so that no row lands in the old table unseen.
LOCK TABLE {table} IN EXCLUSIVE MODE;
