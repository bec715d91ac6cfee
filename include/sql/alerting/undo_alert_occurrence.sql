-- The notification just recorded as sent was not delivered everywhere: count it as never sent, so that the next
-- identical alert goes out at once (a lost page costs more than a repeated Slack message) and still reports the
-- occurrences grouped before this one.
UPDATE ops.alert_groups
SET sent = false,
    last_sent_at = '-infinity',
    grouped_since_sent = grouped_before_sent
WHERE group_key = %(group_key)s
