-- PostgreSQL's view of its archive_command: what it archived last and whether it is failing.
SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time,
       current_setting('archive_mode') AS archive_mode,
       current_setting('archive_command') AS archive_command
FROM pg_stat_archiver
