INSERT INTO ops.state_moves (source, row_counts) VALUES (%(source)s, %(row_counts)s)
ON CONFLICT (source) DO NOTHING
