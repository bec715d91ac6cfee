-- No data is a signal: a rule's state records since when its metric has had no value (NULL: it has one) and
-- whether it fired on its condition or on the missing data; the last value is unknown while there is none.
ALTER TABLE ops.alert_rule_state
    ADD COLUMN IF NOT EXISTS no_data_since timestamptz,
    ADD COLUMN IF NOT EXISTS fired_on_no_data boolean NOT NULL DEFAULT false,
    ALTER COLUMN last_value DROP NOT NULL;
