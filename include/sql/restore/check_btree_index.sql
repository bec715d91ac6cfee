-- Verifies the index structure and that every heap tuple is indexed (heapallindexed), with the amcheck installed
-- in {schema}.
SELECT {schema}.bt_index_check(%(index_oid)s::regclass, true);
