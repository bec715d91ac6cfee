"""Backups of trading_db: full snapshots (dump + base backup), daily WAL bundles, the WAL archive, retention.

Contract (the restore DAG and the CLI rely on it; everything named here is importable from `trading_ops.backup`)
-----------------------------------------------------------------------------------------------------------------
Repository layout, under the policy's `backup.repository` (a local directory; `s3://...` etc. through Airflow's
`ObjectStoragePath`); a backup directory is written as `.partial-<id>` and renamed into place only after its
manifest is complete, so anything listed is whole:

    full/<backup-id>/                 a full backup; id = FULL_ID_RE ^\\d{8}T\\d{6}Z$ (UTC: 20261101T010000Z)
        manifest.json                 see below
        <database>.dump.zst[.age]     pg_dump -Fc -Z0 of the database, zstd-compressed (and age-encrypted)
        base.tar.zst[.age]            pg_basebackup tar of the whole cluster (PostgreSQL's backup_manifest inside)
        verified.json                 result of the last verification (absent: never verified)
        PINNED                        present: kept forever by retention (its text says why)
    incremental/<YYYY-MM-DD>/         the WAL segments archived since the previous bundle (INCREMENTAL_ID_RE)
        manifest.json, wal/<segment>.zst[.age], verified.json, PINNED
    The WAL archive itself (30 days) is the policy's `backup.wal_archive_dir`, filled by PostgreSQL's
    archive_command (`archive_wal.sh` in this package); segments there are plain files, so `restore_command`
    can be `cp <dir>/%f %p`.

manifest.json of a full backup: format, id, type ("full"), database, start_time/stop_time (ISO UTC "...Z"),
start_lsn/stop_lsn/timeline/wal_start_segment/wal_stop_segment/wal_segment_size (of the base backup; replay
needs WAL from wal_start_segment on), snapshot {id, lsn, time} (the exported snapshot the dump reads),
server_version, server_version_num, system_identifier, database_size, row_counts {"schema.table": rows, taken in
the dump's snapshot}, files [{role ("dump" | "base" | a WAL file name), path (relative to the backup directory),
size, sha256 (of the stored bytes), raw_size}], tools {pg_dump, pg_basebackup, trading_ops},
compression {algorithm: zstd|gzip|none, level}, encryption null | {algorithm: "age-x25519", key_id (the age
public key), key_conn_id}, timings. An incremental manifest has id, type ("incremental"), start_time/stop_time,
timeline, first_segment/last_segment, wal_segment_size, rpo_seconds, files, compression, encryption, tools.

API
    repository_from_policy(policy) -> Repository;  Repository(path_or_url)
    take_full_backup(repository, backup_id, *, conn_id, compression, key) -> BackupInfo   (idempotent per id)
    list_backups(repository, backup_type=None) -> [BackupInfo], newest first; BackupInfo has id, type,
        start_time, stop_time, size, verified (True/False/None), verified_at, pinned, manifest, path, summary()
    resolve_backup(repository, "latest" | id, backup_type="full") -> BackupInfo   ("latest" = newest verified)
    verify_backup(repository, backup, *, deep=True, key=None, wal_archive_dir=None) -> BackupInfo (records
        verified.json; raises BackupCorrupt with one sentence); check_checksums(backup) -> files checked
    readable_dump(backup, key=None, scratch_dir=None)  context manager -> Path of a plain custom-format dump for
        `pg_restore` (checksum checked first; decrypted, decompressed; deleted on exit; seekable, so -j works)
    extract_base_backup(backup, data_dir, key=None)  unpack the base backup into an empty directory (for PITR)
    configure_recovery(data_dir, archive_dir, target_time=None)  recovery.signal + restore_command (cp from the
        archive) + recovery_target_time/promote appended to postgresql.auto.conf; then chown to the server's user,
        chmod 700 and start it (tests/test_backup_wal.py shows the whole point-in-time recovery)
    backup_key(backup, key=None) -> EncryptionKey | None   (from the connection the manifest names)
    EncryptionKey.from_connection(conn_id)   the age identity in the connection's password
    FULL_ID_RE, FULL_ID_PATTERN; FULL_BACKUP_CHOICE_PATTERN  the trigger-form pattern: `latest` or a full backup id
    Errors are one sentence. BackupNotFound and BackupCorrupt are `UserError`s (a request names a missing or
    damaged backup: the task fails at once); BackupError is an operational failure (retried, alerted);
    BackupKeyError (a UserError too: `trading_ops.streams.EncryptionKeyError`) a missing or wrong key.
    Compression, encryption and checksums are `trading_ops.streams`, shared with log archives.

The DAGs: `tasks` is the wing's only boundary with Airflow's context; `jobs` does what each task does, as plain
functions of the policy, the run's time and `dry_run`; `preflight` holds the read-only checks every run (and every
dry run) passes before anything is written.
"""

from trading_ops.backup.access import (
    BackupCorrupt,
    backup_key,
    check_checksums,
    configure_recovery,
    extract_base_backup,
    readable_dump,
    verify_backup,
)
from trading_ops.backup.catalog import list_backups, resolve_backup, staleness
from trading_ops.backup.full import BackupError, take_full_backup
from trading_ops.backup.repository import (
    BACKUP_ID_RE,
    FULL_BACKUP_CHOICE_PATTERN,
    FULL_ID_PATTERN,
    FULL_ID_RE,
    INCREMENTAL_ID_RE,
    BackupInfo,
    BackupNotFound,
    Repository,
    full_backup_id,
    repository_from_policy,
)
from trading_ops.streams import Compression, EncryptionKey
from trading_ops.streams import EncryptionKeyError as BackupKeyError

__all__ = [
    "BACKUP_ID_RE",
    "FULL_BACKUP_CHOICE_PATTERN",
    "FULL_ID_PATTERN",
    "FULL_ID_RE",
    "INCREMENTAL_ID_RE",
    "BackupCorrupt",
    "BackupError",
    "BackupInfo",
    "BackupKeyError",
    "BackupNotFound",
    "Compression",
    "EncryptionKey",
    "Repository",
    "backup_key",
    "check_checksums",
    "configure_recovery",
    "extract_base_backup",
    "full_backup_id",
    "list_backups",
    "readable_dump",
    "repository_from_policy",
    "resolve_backup",
    "staleness",
    "take_full_backup",
    "verify_backup",
]
