-- One bar per symbol per step over [start, stop), prices a deterministic pseudo-random walk.
INSERT INTO market_data (symbol, "timestamp", open, high, low, close, volume)
SELECT s.symbol,
       t.ts,
       p.price,
       p.price * 1.004,
       p.price * 0.996,
       p.price * (1 + 0.002 * sin(extract(epoch FROM t.ts) / 7200.0 + s.n)),
       1000 + (abs(hashtext(s.symbol || t.ts::text)) %% 50000)
FROM unnest(%(symbols)s::text[]) WITH ORDINALITY AS s(symbol, n)
CROSS JOIN generate_series(%(start)s::timestamptz, %(stop)s::timestamptz - %(step)s::interval, %(step)s::interval) AS t(ts)
CROSS JOIN LATERAL (
    SELECT round((100 + 10 * s.n + 5 * sin(extract(epoch FROM t.ts) / 86400.0 + s.n))::numeric, 6) AS price
) AS p;
