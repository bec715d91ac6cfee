"""By hand: verify a log archive against its sidecar, then write the original log to stdout.

    python -m trading_ops.logs <archive> [-i <age identity file>] > original.log

Exit 0: verified and extracted; 1: the archive does not match its sidecar (changed after archiving; nothing is
written); 2: it cannot be checked or read (no sidecar, no identity for an encrypted archive, a bad identity file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trading_ops.logs.archives import extract_archive
from trading_ops.logs.naming import sidecar_path
from trading_ops.logs.verify import archive_problem
from trading_ops.streams import EncryptionKey, EncryptionKeyError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trading_ops.logs",
        description="Verify a log archive against its sha256 sidecar, then write the original log to stdout.",
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument("-i", "--identity-file", type=Path, help="age identity file (age-keygen output) for .age")
    args = parser.parse_args(argv)
    if not sidecar_path(args.archive).exists():
        print(f"{sidecar_path(args.archive)} is missing: the archive cannot be verified.", file=sys.stderr)
        return 2
    if archive_problem(args.archive):
        print(f"{args.archive} does NOT match its sha256 sidecar: it was changed after archiving.", file=sys.stderr)
        return 1
    try:
        keys = EncryptionKey.from_identity_file(args.identity_file) if args.identity_file else []
        extract_archive(args.archive, sys.stdout.buffer, keys)
    except EncryptionKeyError as exc:
        print(exc, file=sys.stderr)
        return 2
    sys.stdout.buffer.flush()
    print(f"{args.archive}: sha256 verified, extracted.", file=sys.stderr)
    return 0
