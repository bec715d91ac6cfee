-- The old copy of the ops state, once it is moved: it must not ride along in that database's backups and come
-- back with a restore. The schema goes too when nothing else is left in it.
SET LOCAL client_min_messages = warning;
DROP TABLE IF EXISTS ops.security_findings, ops.security_check_runs, ops.alert_rule_state, ops.alert_groups;
