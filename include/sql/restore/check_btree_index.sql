-- Verifies the index structure and that every heap tuple is indexed (heapallindexed).
SELECT bt_index_check(%(index_oid)s::regclass, true);
