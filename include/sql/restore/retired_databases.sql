-- Databases retired by earlier swaps of the target, named <target>_pre_restore_<YYYYmmddTHHMMSS>.
SELECT datname FROM pg_database WHERE starts_with(datname, %(prefix)s || '_pre_restore_') ORDER BY datname;
