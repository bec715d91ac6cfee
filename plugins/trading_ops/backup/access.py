"""Reading backups back: checksums, verification, a plain dump for pg_restore, an extracted base backup.

Every reader checks the stored file's sha256 against the manifest before it hands anything out, so a damaged
backup stops a restore before the restore changes anything.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from trading_ops import pgtools
from trading_ops.backup.full import BackupError
from trading_ops.backup.repository import MANIFEST_DIGEST, BackupInfo, Repository, manifest_digest
from trading_ops.backup.wal_names import SEGMENT_RE
from trading_ops.errors import UserError
from trading_ops.streams import Compression, EncryptionKey, file_sha256, read_stream
from trading_ops.streams import EncryptionKeyError as BackupKeyError


class BackupCorrupt(UserError):
    """A stored file does not match its manifest, or a PostgreSQL tool rejects the backup.

    A user error where a request names the backup (a restore, `backups verify`): another backup must be chosen,
    retrying cannot help. The backup DAGs' verification of the backup they just took turns it into an operational
    failure (`jobs.BackupVerificationFailed`)."""


def backup_key(backup: BackupInfo, key: EncryptionKey | None = None) -> EncryptionKey | None:
    """The key that decrypts `backup` (None if it is not encrypted); by default from the connection it names."""
    encryption = backup.manifest.get("encryption")
    if not encryption:
        return None
    if key is None:
        if not encryption.get("key_conn_id"):
            raise BackupKeyError(f"Backup {backup.id} is encrypted and no key was given.")
        key = EncryptionKey.from_connection(encryption["key_conn_id"])
    if key.key_id != encryption["key_id"]:
        raise BackupKeyError(
            f"Backup {backup.id} was encrypted with key {encryption['key_id']}, but the key given is {key.key_id}."
        )
    return key


def check_file(backup: BackupInfo, entry: dict) -> None:
    """Size and sha256 of one stored file against its manifest entry."""
    path = backup.path / entry["path"]
    if not path.exists():
        raise BackupCorrupt(f"Backup {backup.id} is missing its file {entry['path']}.")
    with path.open("rb") as handle:
        size, digest = file_sha256(handle)
    if (size, digest) != (entry["size"], entry["sha256"]):
        raise BackupCorrupt(
            f"Backup {backup.id} file {entry['path']} does not match its manifest checksum: the file is damaged."
        )


def check_manifest(backup: BackupInfo) -> None:
    digest_file = backup.path / MANIFEST_DIGEST
    recorded = digest_file.read_text().strip() if digest_file.exists() else None
    if backup.manifest.get("damaged") or recorded != manifest_digest(backup.path):
        raise BackupCorrupt(f"Backup {backup.id} has a damaged manifest.json (it does not match manifest.sha256).")


def check_checksums(backup: BackupInfo) -> int:
    """The manifest and every stored file against it; returns the number of files checked."""
    check_manifest(backup)
    for entry in backup.manifest["files"]:
        check_file(backup, entry)
    return len(backup.manifest["files"])


def read_backup_file(backup: BackupInfo, role: str, sink, key: EncryptionKey | None = None) -> None:
    """Decrypt and decompress the stored file with `role` into `sink` (its checksum is checked first)."""
    check_manifest(backup)
    entry = backup.file_entry(role)
    check_file(backup, entry)
    key = backup_key(backup, key)
    with (backup.path / entry["path"]).open("rb") as source:
        read_stream(source, sink, Compression.from_manifest(backup.manifest["compression"]), [key] if key else [])


@contextmanager
def readable_dump(backup: BackupInfo, key: EncryptionKey | None = None, scratch_dir=None) -> Generator[Path]:
    """A plain custom-format dump of a full backup, ready for `pg_restore` (also with -j); deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"dump-{backup.id}-", dir=scratch_dir) as directory:
        path = Path(directory) / f"{backup.manifest['database']}.dump"
        with open(path, "wb") as sink:
            read_backup_file(backup, "dump", sink, key)
        yield path


def extract_base_backup(backup: BackupInfo, data_dir: Path, key: EncryptionKey | None = None) -> None:
    """Unpack the base backup into `data_dir` (created; must not hold anything). WAL comes from the archive."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty; a base backup is extracted only into an empty directory.")
    with tempfile.TemporaryFile() as stderr:
        tar = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(data_dir)], stdin=subprocess.PIPE, stderr=stderr)
        try:
            read_backup_file(backup, "base", tar.stdin, key)
        finally:
            tar.stdin.close()
            tar.wait()
        if tar.returncode != 0:
            stderr.seek(0)
            raise BackupCorrupt(f"tar could not extract backup {backup.id}: {stderr.read().decode()[-300:].strip()}")


@contextmanager
def extracted_base_backup(backup: BackupInfo, key: EncryptionKey | None = None, scratch_dir=None) -> Generator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"base-{backup.id}-", dir=scratch_dir) as directory:
        data_dir = Path(directory) / "data"
        extract_base_backup(backup, data_dir, key)
        yield data_dir


def _run_check(argv: list[str], what: str, backup: BackupInfo) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupCorrupt(f"{what} rejects backup {backup.id}: {result.stderr.strip()[-400:]}")
    return result.stdout


def verify_dump(backup: BackupInfo, dump: Path) -> list[str]:
    """pg_restore reads the dump's table of contents and every data block; each counted table has its data."""
    pg_restore = pgtools.client("pg_restore", at_least=backup.pg_dump_major)
    listing = _run_check([pg_restore, "--list", str(dump)], "pg_restore --list", backup)
    missing = [
        table for table in backup.manifest["row_counts"] if f" TABLE DATA {table.replace('.', ' ', 1)} " not in listing
    ]
    if missing:
        raise BackupCorrupt(f"The dump of backup {backup.id} has no data for {', '.join(missing)}.")
    _run_check([pg_restore, "-f", os.devnull, str(dump)], "pg_restore", backup)
    return ["pg_restore --list", f"table data of {len(backup.manifest['row_counts'])} tables", "pg_restore reads all"]


def verify_base(backup: BackupInfo, data_dir: Path, wal_archive_dir: Path | None) -> list[str]:
    wal = ["-w", str(wal_archive_dir)] if wal_archive_dir else ["-n"]
    # It parses the backup's WAL, whose format is the server's: the server's own version fits.
    pg_verifybackup = pgtools.client("pg_verifybackup", at_least=backup.server_major)
    _run_check([pg_verifybackup, *wal, str(data_dir)], "pg_verifybackup", backup)
    return [f"pg_verifybackup ({'with WAL from the archive' if wal_archive_dir else 'files only'})"]


def verify_backup(
    repository: Repository,
    backup: BackupInfo,
    *,
    deep: bool = True,
    key: EncryptionKey | None = None,
    wal_archive_dir: Path | None = None,
    scratch_dir=None,
) -> BackupInfo:
    """Verify a backup and record the result next to its manifest; raises BackupCorrupt on the first problem.

    Checksums always; `deep` also decompresses everything and lets PostgreSQL's tools read it: pg_restore for the
    dump, pg_verifybackup for the base backup (with the WAL range from `wal_archive_dir` when given), and every
    WAL segment of an incremental backup must decompress to a whole segment.
    """
    checks: list[str] = []
    try:
        checks.append(f"sha256 of {check_checksums(backup)} files")
        if deep and backup.type == "full":
            with readable_dump(backup, key, scratch_dir) as dump:
                checks += verify_dump(backup, dump)
            with extracted_base_backup(backup, key, scratch_dir) as data_dir:
                checks += verify_base(backup, data_dir, wal_archive_dir)
        elif deep:
            checks.append(verify_wal_bundle(backup, key))
    except (BackupError, BackupCorrupt, BackupKeyError, OSError, ValueError) as exc:
        repository.record_verification(backup, False, checks, str(exc))
        if isinstance(exc, BackupError | BackupCorrupt | BackupKeyError):
            raise
        raise BackupCorrupt(f"Backup {backup.id} cannot be read back: {exc}") from exc
    return repository.record_verification(backup, True, checks, None)


class _Counter:
    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def verify_wal_bundle(backup: BackupInfo, key: EncryptionKey | None = None) -> str:
    segment_size = backup.manifest["wal_segment_size"]
    for entry in backup.manifest["files"]:
        counter = _Counter()
        read_backup_file(backup, entry["role"], counter, key)
        if counter.size != entry["raw_size"] or (SEGMENT_RE.match(entry["role"]) and counter.size != segment_size):
            raise BackupCorrupt(f"WAL file {entry['path']} of backup {backup.id} decompresses to the wrong size.")
    return f"{len(backup.manifest['files'])} WAL files decompress whole"


def configure_recovery(
    data_dir: Path,
    archive_dir: Path | None = None,
    target_time: datetime | None = None,
    *,
    restore_command: str | None = None,
    target_name: str | None = None,
) -> None:
    """Make an extracted base backup recover, up to `target_time` or the restore point `target_name` (else to the
    end) and promote. WAL comes from `restore_command`, by default a copy from `archive_dir`. Appended to
    postgresql.auto.conf, so these settings win over the ones the backup carries."""
    if restore_command is None:
        restore_command = f"cp {shlex.quote(str(archive_dir))}/%f %p"
    settings = {"restore_command": restore_command}
    if target_time is not None:
        # PostgreSQL's timestamp input takes neither the ISO "T" with "Z" suffix everywhere nor naive times.
        moment = target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        settings |= {"recovery_target_time": moment, "recovery_target_action": "promote"}
    elif target_name is not None:
        # Replay stops right after the first restore point record of that name (pg_create_restore_point).
        settings |= {"recovery_target_name": target_name, "recovery_target_action": "promote"}
    with open(data_dir / "postgresql.auto.conf", "a") as conf:
        for name, value in settings.items():
            conf.write(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n")
    (data_dir / "recovery.signal").touch()
