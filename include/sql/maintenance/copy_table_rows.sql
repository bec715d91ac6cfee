-- Copy every row of a detached partition into the archive (whose columns match, checked before).
INSERT INTO {target} SELECT * FROM {source};
