-- Demo orders: one per symbol per step over the same period as the market data.
INSERT INTO orders (symbol, side, quantity, price, created_at)
SELECT s.symbol,
       CASE WHEN (abs(hashtext(s.symbol || t.ts::text)) %% 2) = 0 THEN 'buy' ELSE 'sell' END,
       1 + (abs(hashtext(t.ts::text || s.symbol)) %% 100),
       100 + 10 * s.n,
       t.ts
FROM unnest(%(symbols)s::text[]) WITH ORDINALITY AS s(symbol, n)
CROSS JOIN generate_series(%(start)s::timestamptz, %(stop)s::timestamptz - %(step)s::interval, %(step)s::interval) AS t(ts);
