-- Demo instruments; existing symbols are left as they are so a rerun changes nothing.
INSERT INTO instruments (symbol, name, exchange, tick_size)
SELECT symbol, symbol || ' demo instrument', %(exchange)s, 0.01
FROM unnest(%(symbols)s::text[]) AS symbol
ON CONFLICT (symbol) DO NOTHING;
