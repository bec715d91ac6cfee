-- The largest value a sequence-fed column holds.
SELECT max({column}) FROM {table};
