"""What the log-rotation tests share: the policy's class names, a snapshot of a directory tree, the wing's CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
CLASSES = ("application_logs", "system_logs", "audit_logs")


def tree(root: Path) -> dict[str, tuple]:
    """Every file and directory under root: mode, size, mtime and content hash."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        snapshot[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns, digest)
    return snapshot


def logs_cli(archive: Path, identity_file: Path) -> subprocess.CompletedProcess:
    """`python -m trading_ops.logs <archive> -i <identity file>` in a fresh interpreter, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "trading_ops.logs", str(archive), "-i", str(identity_file)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(PLUGINS)},
        timeout=60,
    )
