-- Record one occurrence of an alert and decide in the same statement whether it is sent: it is when the alert is
-- new or its last notification is older than the grouping window; otherwise it is counted into that notification.
INSERT INTO ops.alert_groups AS g
    (group_key, dedup_key, level, source, summary, first_seen_at, last_sent_at, sent)
VALUES
    (%(group_key)s, %(dedup_key)s, %(level)s, %(source)s, %(summary)s, %(at)s, %(at)s, true)
ON CONFLICT (group_key) DO UPDATE SET
    sent = g.last_sent_at <= EXCLUDED.last_sent_at - %(window)s,
    last_sent_at = CASE
        WHEN g.last_sent_at <= EXCLUDED.last_sent_at - %(window)s THEN EXCLUDED.last_sent_at
        ELSE g.last_sent_at
    END,
    grouped_before_sent = CASE
        WHEN g.last_sent_at <= EXCLUDED.last_sent_at - %(window)s THEN g.grouped_since_sent
        ELSE g.grouped_before_sent
    END,
    grouped_since_sent = CASE
        WHEN g.last_sent_at <= EXCLUDED.last_sent_at - %(window)s THEN 0
        ELSE g.grouped_since_sent + 1
    END
RETURNING sent, grouped_before_sent
