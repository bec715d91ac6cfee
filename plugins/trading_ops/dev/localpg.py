"""A throwaway PostgreSQL cluster on 127.0.0.1, for the tests and for `make up`.

initdb and pg_ctl refuse to run as root, so when we are root they run as the `postgres` OS user on a directory it
owns (`trading_ops.pgserver`, shared with the restore's recovery instance). The cluster archives WAL
(`wal_level=replica`, `archive_mode=on`) into a fresh directory per cluster: segment names restart at 1 in every new
cluster, so reusing an archive directory would make the next run's `archive_command` refuse its first segment.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from trading_ops.pgserver import SERVER_USER, as_server_user, free_port, give_to_server_user, server_user_can_reach
from trading_ops.pgtools import server_bindir

__all__ = ["ARCHIVE_SCRIPT", "LocalCluster", "free_port", "server_user_can_reach"]

ARCHIVE_SCRIPT = Path(__file__).resolve().parents[1] / "backup" / "archive_wal.sh"


@dataclass
class LocalCluster:
    base_dir: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    superuser: str = "postgres"
    extra_settings: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def wal_archive_dir(self) -> Path:
        return self.base_dir / "wal-archive"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        result = subprocess.run(as_server_user(argv), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    @property
    def archive_script(self) -> Path:
        return self.base_dir / "archive_wal.sh"

    def settings(self) -> dict[str, str]:
        archive = shlex.quote(str(self.wal_archive_dir))
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "wal_level": "replica",
            "archive_mode": "on",
            # The project's archive_command (never overwrites a different segment, fsyncs), copied next to the
            # cluster because the postgres OS user may not be able to read the checkout.
            "archive_command": f"'{shlex.quote(str(self.archive_script))} {archive} %p %f'",
            "max_wal_senders": "10",
            # The policy's RPO (backup.rpo): a segment is closed and archived at least this often.
            "archive_timeout": "60s",
            "password_encryption": "'scram-sha-256'",
            "log_connections": "on",
            "log_disconnections": "on",
            "logging_collector": "off",
            "shared_buffers": "128MB",
            "max_connections": "100",
            **self.extra_settings,
        }

    def init(self) -> None:
        """Create the cluster; the superuser's password is set from a file that is deleted right after."""
        bindir = server_bindir()
        if not server_user_can_reach(self.base_dir.parent):
            raise PermissionError(
                f"the {SERVER_USER} OS user cannot enter {self.base_dir.parent}: put the cluster in a directory it can "
                "reach (every parent needs o+x)"
            )
        for directory in (self.base_dir, self.wal_archive_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            give_to_server_user(directory)
        shutil.copyfile(ARCHIVE_SCRIPT, self.archive_script)
        self.archive_script.chmod(0o755)
        pwfile = self.base_dir / ".pwfile"
        pwfile.write_text(self.password + "\n")
        give_to_server_user(pwfile)
        try:
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            )
        finally:
            pwfile.unlink()
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            for key, value in self.settings().items():
                conf.write(f"{key} = {value}\n")

    def start(self, timeout: float = 60) -> None:
        self.log_file.touch()
        give_to_server_user(self.log_file)
        self._run(
            [
                str(server_bindir() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run([str(server_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            as_server_user([str(server_bindir() / "pg_ctl"), "-D", str(self.data_dir), "status"]),
            capture_output=True,
        )
        return result.returncode == 0

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.superuser} password={self.password} dbname={dbname}"

    def uri(self, dbname: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://{quote(self.superuser)}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, template: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(statement)

    def database_exists(self, name: str) -> bool:
        import psycopg

        from trading_ops.sqlfiles import load_sql

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            return conn.execute(load_sql("restore/database_exists.sql"), {"name": name}).fetchone()[0]

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
