"""`python -m trading_ops wal fetch %f %p`: the restore_command of a point-in-time recovery.

PostgreSQL runs the command once per WAL file it wants (segments, timeline history files, and names that do not
exist, to find the end of the WAL or a free timeline id). It finds the file in the *segment index* the restore task
wrote next to the recovery instance (`TRADING_OPS_WAL_INDEX` names it; `backup.wal_sources.write_index` builds it):
for each file, where it is (the WAL archive, or a daily bundle under `incremental/` in the repository) and what
its stored bytes must be (size, and the sha256 of a bundle's manifest). A bundle's file is checked, decrypted and
decompressed; the result is written under a temporary name and renamed to %p, so the server never reads half a
segment. Each fetch appends one line to the index's `log` (the restore task reports progress from it).

Exit status 0: the file is at %p. 1: the index has no such file (normal at the end of the WAL). 255: the file
exists but is damaged or cannot be decrypted, or the index cannot be read. PostgreSQL takes any status up to 125 as
"no such file", ends recovery there and promotes: a damaged segment would silently cut the recovery short. A status
above 125 (a shell error to PostgreSQL) aborts the recovery instead, which the restore task reports with the
instance's log and this command's one line about the file.

Deliberately light: stdlib, zstandard and pyrage only, no Airflow and none of the project modules that import it.
The command runs once per segment, and importing Airflow alone costs about 3 s, longer than replaying a segment.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path

INDEX_ENV = "TRADING_OPS_WAL_INDEX"
NOT_FOUND, DAMAGED = 1, 255


class WalFetchError(Exception):
    """A WAL file of the index cannot be handed to the server as it should be."""


def _decode(stored: bytes, entry: dict, identity: str | None) -> bytes:
    if entry.get("encrypted"):
        import pyrage

        if not identity:
            raise WalFetchError(f"{entry['path']} is encrypted and no key was given")
        identity = pyrage.x25519.Identity.from_str(identity)
        try:
            stored = pyrage.decrypt(stored, [identity])
        except pyrage.DecryptError:
            raise WalFetchError(f"{entry['path']} cannot be decrypted with the backup's key") from None
    compression = entry.get("compression", "none")
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(stored, max_output_size=entry["raw_size"])
    if compression == "gzip":
        return gzip.decompress(stored)
    return stored


def read_entry(entry: dict, identity: str | None) -> bytes:
    """The plain content of one indexed WAL file, after checking what is stored against the index; `identity` is
    the age identity (AGE-SECRET-KEY-1...) of encrypted bundles."""
    stored = Path(entry["path"]).read_bytes()
    if len(stored) != entry["size"]:
        raise WalFetchError(f"{entry['path']} has {len(stored)} bytes, expected {entry['size']}")
    if entry.get("sha256") and hashlib.sha256(stored).hexdigest() != entry["sha256"]:
        raise WalFetchError(f"{entry['path']} does not match its manifest checksum")
    content = _decode(stored, entry, identity)
    if len(content) != entry["raw_size"]:
        raise WalFetchError(f"{entry['path']} decodes to {len(content)} bytes, expected {entry['raw_size']}")
    return content


def fetch(name: str, destination: Path, index_path: Path) -> int:
    """Put WAL file `name` at `destination`; returns the exit status (see the module's docstring)."""
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        print(f"wal fetch: the segment index {index_path} cannot be read: {exc}", file=sys.stderr)
        return DAMAGED
    entry = index["files"].get(name)
    if entry is None:
        return NOT_FOUND
    started = time.monotonic()
    identity_file = index.get("identity_file")
    # Any failure to hand over a file the index has (a decompressor's own error types included) must stop the
    # recovery, never read as the end of the WAL.
    try:
        content = read_entry(entry, Path(identity_file).read_text().strip() if identity_file else None)
        temporary = destination.with_name(f".{destination.name}.partial")
        with open(temporary, "wb") as handle:
            handle.write(content)
        os.replace(temporary, destination)
    except Exception as exc:
        print(f"wal fetch: {name}: {exc}", file=sys.stderr)
        _log(index, {"name": name, "error": str(exc)})
        return DAMAGED
    _log(index, {"name": name, "source": entry["source"], "seconds": round(time.monotonic() - started, 3)})
    return 0


def _log(index: dict, record: dict) -> None:
    if index.get("log"):
        with open(index["log"], "a") as log:
            log.write(json.dumps(record) + "\n")


def fetched(log_path: Path) -> list[dict]:
    """What the fetches so far logged, oldest first."""
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m trading_ops wal fetch <wal file name (%f)> <destination (%p)>", file=sys.stderr)
        return DAMAGED
    index_path = os.environ.get(INDEX_ENV)
    if not index_path:
        print(
            f"wal fetch: {INDEX_ENV} is not set; the restore task sets it to the segment index of the recovery",
            file=sys.stderr,
        )
        return DAMAGED
    return fetch(argv[0], Path(argv[1]), Path(index_path))
