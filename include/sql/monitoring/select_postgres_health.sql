-- One snapshot of the server's health: client connections against max_connections, replication lag (a standby's
-- replay delay, or a primary's worst replica; NULL when there is no replication), the oldest open transaction,
-- WAL archiving (failing while the last failure is newer than the last success) and the database's size.
-- A standby that has replayed all the WAL it received has no lag: the time since the last replayed commit only
-- says how long the primary has been idle. (replay_lag on a primary turns NULL once its replicas are idle.)
-- Other sessions' transaction times are visible only to a superuser or a member of pg_monitor.
SELECT
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
    current_setting('max_connections')::integer AS max_connections,
    CASE
        WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        WHEN pg_is_in_recovery() THEN extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
        WHEN EXISTS (SELECT FROM pg_stat_replication)
            THEN (SELECT coalesce(extract(epoch FROM max(replay_lag)), 0) FROM pg_stat_replication)
    END AS replication_lag_seconds,
    (SELECT count(*) FROM pg_stat_replication) AS replicas,
    (
        SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)
        FROM pg_stat_activity
        WHERE xact_start IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid()
    ) AS longest_transaction_seconds,
    archiver.failed_count AS wal_archive_failed_count,
    archiver.last_failed_wal AS wal_archive_last_failed_wal,
    archiver.last_failed_time AS wal_archive_last_failed_time,
    (archiver.last_failed_time IS NOT NULL
        AND archiver.last_failed_time > coalesce(archiver.last_archived_time, '-infinity'))::integer
        AS wal_archive_failing,
    pg_database_size(current_database()) AS database_size_bytes
FROM pg_stat_archiver AS archiver
