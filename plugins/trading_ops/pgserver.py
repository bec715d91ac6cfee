"""Running PostgreSQL server programs on this host: as the `postgres` OS user when we are root, on free ports.

initdb, pg_ctl and postgres refuse to run as root, so when the worker (or a test) runs as root they run through
`runuser` as the `postgres` OS user, on directories handed to it. Used by the restore's recovery instance
(`restore.recovery`) and by the throwaway clusters of the tests and `make up` (`dev.localpg`).
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from pathlib import Path

SERVER_USER = "postgres"


def free_port(preferred: int = 0) -> int:
    """`preferred` when nothing listens there, otherwise any free port on 127.0.0.1."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_server_user(argv: list[str]) -> list[str]:
    """`argv` run as the server's OS user: unchanged unless we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return argv


def server_user_can_reach(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run(["runuser", "-u", SERVER_USER, "--", "test", "-x", str(path)]).returncode == 0


def give_to_server_user(path: Path, recursive: bool = False) -> None:
    """Make the server's OS user own `path` (and, `recursive`, everything under it); nothing unless we are root."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVER_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    if recursive:
        for parent, directories, files in os.walk(path):
            for name in [*directories, *files]:
                os.chown(os.path.join(parent, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def python_for_server_user() -> tuple[str, list[str]]:
    """(an interpreter the server's OS user can run, extra PYTHONPATH entries) for commands the server runs, such
    as restore_command. This interpreter when that user can run it; otherwise (we are root and it lives under a
    home only root may enter, e.g. pyenv's) the system's interpreter of the same version, with this environment's
    site-packages, so the same packages import."""
    import site
    import sys

    if server_user_can_execute(Path(sys.executable).resolve()):
        return sys.executable, []
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not server_user_can_execute(system):
        raise RuntimeError(
            f"the {SERVER_USER} OS user can run neither {sys.executable} nor {system}: install Python where it can"
        )
    return str(system), [path for path in site.getsitepackages() if Path(path).is_dir()]


def server_user_can_execute(program: Path) -> bool:
    if os.geteuid() != 0:
        return os.access(program, os.X_OK)
    return subprocess.run(["runuser", "-u", SERVER_USER, "--", "test", "-x", str(program)]).returncode == 0
