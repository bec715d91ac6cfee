"""Reading what the checks check: commands, log files and the Kubernetes API (HTTP services go through
`trading_ops.http_connections`), each failing loudly when unreachable.

Every reader raises `CheckSourceError` with one sentence naming the source when it cannot read it: a check that
could not look must not report that it found nothing.
"""

from __future__ import annotations

import glob
import gzip
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from trading_ops import kube
from trading_ops.paths import PROJECT_ROOT
from trading_ops.security.findings import CheckSourceError

T = TypeVar("T")


def run_command(argv: list[str], timeout: timedelta, what: str) -> str:
    """The standard output of `argv`; a missing program, a non-zero exit or a timeout raises."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout.total_seconds())
    except FileNotFoundError:
        raise CheckSourceError(f"Cannot read {what}: the command {argv[0]!r} is not installed.") from None
    except subprocess.TimeoutExpired:
        raise CheckSourceError(f"Cannot read {what}: {argv[0]} did not finish in {timeout}.") from None
    if result.returncode != 0:
        stderr = " ".join(result.stderr.split())[-500:]
        reason = f": {stderr}" if stderr else "."
        raise CheckSourceError(f"Cannot read {what}: {argv[0]} exited with {result.returncode}{reason}")
    return result.stdout


def read_log_files(patterns: list[str], what: str) -> list[tuple[Path, str]]:
    """(path, text) of every file the glob patterns match (gzip-compressed ones unpacked); none at all raises."""
    paths = sorted({Path(path) for pattern in patterns for path in glob.glob(pattern)})
    if not paths:
        raise CheckSourceError(f"Cannot read {what}: no file matches {', '.join(patterns)}.")
    files = []
    for path in paths:
        try:
            if path.suffix == ".gz":
                with gzip.open(path, "rt", errors="replace") as handle:
                    files.append((path, handle.read()))
            else:
                files.append((path, path.read_text(errors="replace")))
        except OSError as exc:
            raise CheckSourceError(f"Cannot read {what}: {path}: {exc.strerror or exc}.") from None
    return files


def read_kubernetes(conn_id: str, what: str, request: Callable[..., T]) -> T:
    """`request(api_client)` on the cluster of `conn_id`, reading `what` ("the RBAC bindings")."""
    try:
        return kube.call(conn_id, f"read {what}", request)
    except kube.KubernetesUnavailable as exc:
        raise CheckSourceError(str(exc)) from None


def project_file(name: str) -> Path:
    """A file named in the policy: absolute, or relative to the project root."""
    path = Path(name)
    return path if path.is_absolute() else PROJECT_ROOT / path
