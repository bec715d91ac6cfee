"""What the log-rotation tests share: the policy's class names, a snapshot of a directory tree, the wing's CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.support.harness import POLICY_ROOT
from trading_ops.dev.local_policy import local_log_signing_key
from trading_ops.logs.chain import signing_key, verify_key

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
# The pair write_local_policy made for the test policy: its public half is logs.chain.public_key there.
SIGNING_SECRET, CHAIN_PUBLIC_KEY = local_log_signing_key(POLICY_ROOT)
SIGNER = signing_key(SIGNING_SECRET, "audit_log_signing_key", verify_key(CHAIN_PUBLIC_KEY))
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
    """`python -m trading_ops logs extract <archive> -i <identity file>` in a fresh interpreter, as an operator
    runs it."""
    return trading_ops_cli("logs", "extract", str(archive), "-i", str(identity_file))


def trading_ops_cli(*argv: str) -> subprocess.CompletedProcess:
    """`python -m trading_ops <argv>` in a fresh interpreter (the test policy in its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "trading_ops", *argv],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(PLUGINS)},
        timeout=60,
    )
