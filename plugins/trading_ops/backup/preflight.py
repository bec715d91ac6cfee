"""The read-only checks a backup run depends on, run before every backup run and by every dry run.

A dry run that passes them predicts a real run that passes: the connection works, its user has the REPLICATION
attribute and a WAL sender to use (pg_basebackup) or may call pg_switch_wal(), WAL archiving is on and not
failing, the repository and the archive can be written, the encryption key is there when the policy asks for one,
and the PostgreSQL programs fit the server. Nothing is written: the repository's and the archive's write access
are checked with the operating system's permission check, not with a file.

What a person must fix (a missing attribute, archiving off, an unwritable directory) raises `BackupRefused`, a
`UserError`, and so does a missing or malformed key (`streams.EncryptionKeyError`): the run stops at once. An
archiver that is failing right now is an operational failure (`WalArchiveError`): it is retried and alerts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trading_ops.backup.repository import Repository, is_local, isoformat
from trading_ops.backup.wal import ArchiverStatus, WalArchiveError, archiver_status
from trading_ops.errors import UserError
from trading_ops.streams import EncryptionKey


class BackupRefused(UserError):
    """A check before a backup found something a person must fix first."""


@dataclass(frozen=True)
class ServerReadiness:
    """What the checks read from the server."""

    user_name: str
    can_replicate: bool
    max_wal_senders: int
    can_switch_wal: bool
    server_version_num: int
    archiver: ArchiverStatus


def read_server(conn_id: str) -> ServerReadiness:
    """Connect (an unreachable server is an operational failure) and read the user's rights and the archiver."""
    from trading_ops.db import connection
    from trading_ops.sqlfiles import load_sql

    with connection(conn_id, autocommit=True) as conn:
        cursor = conn.execute(load_sql("backup/backup_privileges.sql"))
        row = dict(zip([column.name for column in cursor.description], cursor.fetchone(), strict=True))
        return ServerReadiness(**row, archiver=archiver_status(conn))


def check_connection(server: ServerReadiness, conn_id: str) -> str:
    from trading_ops.pgtools import major_of_version_num

    major = major_of_version_num(server.server_version_num)
    return f"connection {conn_id} reaches PostgreSQL {major} as {server.user_name}"


def check_archiving(archiver: ArchiverStatus) -> str:
    if archiver.archive_mode == "off":
        raise BackupRefused("WAL archiving is off on the server: set archive_mode=on and archive_command.")
    if archiver.failing:
        raise WalArchiveError(
            f"archive_command has been failing since {isoformat(archiver.last_failed_time)} on "
            f"{archiver.last_failed_wal}."
        )
    last = archiver.last_archived_wal or "nothing yet"
    return f"WAL archiving is on (archive_mode={archiver.archive_mode}) and not failing; last archived: {last}"


def check_base_backup_rights(server: ServerReadiness, conn_id: str) -> str:
    if not server.can_replicate:
        raise BackupRefused(
            f"The user {server.user_name} of connection {conn_id} lacks the REPLICATION attribute pg_basebackup "
            f"needs: ALTER ROLE {server.user_name} REPLICATION."
        )
    if server.max_wal_senders < 1:
        raise BackupRefused("The server allows no WAL sender (max_wal_senders = 0), which pg_basebackup needs.")
    return f"{server.user_name} has the REPLICATION attribute; max_wal_senders = {server.max_wal_senders}"


def check_switch_wal_right(server: ServerReadiness, conn_id: str) -> str:
    if not server.can_switch_wal:
        raise BackupRefused(
            f"The user {server.user_name} of connection {conn_id} may not call pg_switch_wal(): "
            f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {server.user_name}."
        )
    return f"{server.user_name} may call pg_switch_wal()"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_directory(path: Path, what: str, *, must_exist: bool) -> str:
    """`path` (or, when it may still be created, its nearest existing parent) accepts new files."""
    if must_exist and not path.is_dir():
        raise BackupRefused(f"The {what} {path} does not exist.")
    existing = _nearest_existing(path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BackupRefused(f"The {what} {path} is not writable by this worker ({existing} refuses new files).")
    return f"the {what} {path} is writable" + ("" if existing == path else f" (created under {existing})")


def check_repository(repository: Repository) -> str:
    if is_local(repository.root):
        return check_writable_directory(repository.root, "backup repository", must_exist=False)
    # Object storage grants writes by credentials no call can test without writing; listing the bucket proves it
    # is reachable with them (wrong ones: one sentence naming the connection).
    bucket = repository.root.path.split("/", 1)[0]
    with repository.errors("listing its bucket"):
        repository.root.fs.ls(bucket, refresh=True)
    return f"the backup repository {repository.root} is reachable with connection {repository.conn_id}"


def check_encryption_key(enabled: bool, key_conn_id: str) -> tuple[EncryptionKey | None, str]:
    """The key new backups are encrypted with (None when encryption is off), and what was checked."""
    if not enabled:
        return None, "encryption is off (backup.encryption.enabled)"
    # A missing connection or a password that is no age identity is an EncryptionKeyError, a UserError.
    key = EncryptionKey.from_connection(key_conn_id)
    return key, f"the encryption key in connection {key_conn_id} is an age identity ({key.key_id})"


def check_client(name: str, server_version_num: int) -> str:
    from trading_ops import pgtools

    program = pgtools.client(name, at_least=pgtools.major_of_version_num(server_version_num))
    return f"{pgtools.tool_version(program)} at {program}"
