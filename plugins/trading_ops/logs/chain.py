"""The signed chain of a class's archives: proof that none was deleted, altered or slipped in afterwards.

A sha256 sidecar proves nothing against whoever can write the log directory: they recompute it. So every archive a
run writes, and every archive retention deletes, is also recorded in the chain of its directory,
`<directory>/.chain.<class>.jsonl`, one JSON entry per line:

    {"seq": 0, "kind": "open", "log_class", "host", "directory", "pattern", "at", "prev", "sig"}
    {"seq": n, "kind": "archive", "name", "size", "sha256", "lines_from", "lines_to", "at", "prev", "sig"}
    {"seq": n, "kind": "delete", "name", "sha256", "reason", "at", "prev", "sig"}

`prev` is the sha256 of the previous entry's line (64 zeros for the first), `sig` an Ed25519 signature (base64) of
the entry's canonical JSON without `sig`. The private key is the password of the connection
`logs.chain.signing_key_conn_id` (never logged, never in XCom or argv); the public key, which is all a verifier
needs, is `logs.chain.public_key` in the policy. `lines_to` is the time of the archive's newest line (the mtime
of the file it came from), `lines_from` the previous archive of the same file's `lines_to` (its lines were all
written after that; null for the first one).

The chain is written whole under a temporary name and renamed into place. Its head (the last entry's seq and hash,
signed too) is also stored off the host, in the backup repository (`Repository.store_object`): a chain cut short,
rolled back to an older copy, or rewritten by someone holding the key is consistent on its own, but it no longer
ends at the off-host head.

`verify` replays a chain against what a directory holds and returns one sentence per problem: an unreadable,
unsigned, reordered or missing entry; an archive the chain lists but the directory lacks or holds with other
bytes; an archive the directory holds but the chain does not list; a chain that does not reach the off-host head.

A directory's first chain is opened by the first run that finds none and no off-host head: the archives already
there that match their sidecars are enrolled (`"enrolled": true`) as they are; before that, only the sidecars
vouched for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trading_ops.errors import UserError
from trading_ops.logs.naming import ROTATED_NAME, SIDECAR_SUFFIX, part_path
from trading_ops.streams import file_sha256

GENESIS = "0" * 64
CHAIN_PREFIX = ".chain."
CHAIN_SUFFIX = ".jsonl"


class ChainKeyError(UserError):
    """The chain's signing or verification key is missing or does not fit: one sentence saying which."""


def chain_path(directory: Path, log_class: str) -> Path:
    return directory / f"{CHAIN_PREFIX}{log_class}{CHAIN_SUFFIX}"


def chains_in(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{CHAIN_PREFIX}*{CHAIN_SUFFIX}"))


def head_object_name(host: str, log_class: str, directory: str) -> str:
    """Where the off-host head of a directory's chain is stored in the backup repository."""
    return f"log-chains/{host}/{log_class}/{hashlib.sha256(directory.encode()).hexdigest()[:16]}.json"


def isotime(moment: datetime | float | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def _unsigned(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "sig"}


# --- keys ------------------------------------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def generate_signing_key() -> tuple[str, str]:
    """A new key pair: (private key for the connection's password, public key for `logs.chain.public_key`)."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode(), public_key_text(private.public_key())


def public_key_of(private: str) -> str:
    """The public key of a private key as `generate_signing_key` prints it."""
    return public_key_text(Ed25519PrivateKey.from_private_bytes(base64.b64decode(private)).public_key())


def verify_key(text: str) -> Ed25519PublicKey:
    """The policy's `logs.chain.public_key`: 32 raw bytes in base64 (what `logs keygen` prints)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ChainKeyError(
            "logs.chain.public_key is not an Ed25519 public key (44 characters of base64, from `python -m "
            "trading_ops logs keygen`)."
        ) from None


def signing_key(secret: str, conn_id: str, expected_public: Ed25519PublicKey) -> Ed25519PrivateKey:
    """The private key held in connection `conn_id` (base64 of 32 raw bytes, or a PKCS#8 PEM); it must be the
    one whose public key the policy holds, or nothing it signed could be verified."""
    secret = secret.strip()
    try:
        if secret.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(secret.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("not Ed25519")
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret, validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise ChainKeyError(
            f"Connection {conn_id} does not hold an Ed25519 private key (base64 of 32 bytes or a PEM) as its password."
        ) from None
    if public_key_text(key.public_key()) != public_key_text(expected_public):
        raise ChainKeyError(
            f"The private key in connection {conn_id} does not belong to logs.chain.public_key: the chain could "
            "not be verified with it. Put the matching pair in both (python -m trading_ops logs keygen)."
        )
    return key


def signing_key_from_connection(conn_id: str, expected_public: Ed25519PublicKey) -> Ed25519PrivateKey:
    from trading_ops.streams import EncryptionKeyError, connection_password

    try:
        secret = connection_password(conn_id, "the Ed25519 private key of the log chains")
    except EncryptionKeyError as exc:
        raise ChainKeyError(str(exc)) from None
    return signing_key(secret, conn_id, expected_public)


def sign(entry: dict, key: Ed25519PrivateKey) -> dict:
    return {**entry, "sig": base64.b64encode(key.sign(canonical(_unsigned(entry)))).decode()}


def signature_ok(entry: dict, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(base64.b64decode(entry.get("sig", ""), validate=True), canonical(_unsigned(entry)))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


# --- reading and writing ------------------------------------------------------------------------------------------


@dataclass
class ParsedChain:
    entries: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_chain(path: Path) -> ParsedChain:
    """The entries of a chain file; a line that is not one whole JSON object is a problem, not an entry."""
    parsed = ParsedChain()
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line:
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            parsed.problems.append(f"{path}: line {number} is not a whole chain entry (truncated or altered)")
            continue
        parsed.entries.append(entry)
    return parsed


def write_chain(path: Path, entries: Iterable[dict], prefix: bytes = b"") -> None:
    """The whole chain (`prefix`, then `entries`) under a temporary name, fsynced, renamed into place: a reader
    sees the old chain or the new one, never half."""
    temporary = part_path(path)
    with open(temporary, "wb") as handle:
        handle.write(prefix)
        for entry in entries:
            handle.write(canonical(entry) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, path)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def head_of(entries: list[dict], key: Ed25519PrivateKey) -> dict:
    last = entries[-1]
    return sign(
        {
            "log_class": entries[0].get("log_class"),
            "host": entries[0].get("host"),
            "directory": entries[0].get("directory"),
            "seq": len(entries) - 1,
            "hash": entry_hash(last),
        },
        key,
    )


# --- verification ------------------------------------------------------------------------------------------------


def archives_on_disk(directory: Path, pattern: str) -> dict[str, Path]:
    """What the directory holds as archives of a class: rotated names of its pattern that are compressed or
    encrypted, or sealed with a sidecar (the hidden `.part` files of a run in progress are not archives yet)."""
    found = {}
    for entry in directory.iterdir():
        match = ROTATED_NAME.match(entry.name)
        if entry.name.startswith(".") or not match or not fnmatch(match["base"], pattern) or not entry.is_file():
            continue
        if match["ext"] or (directory / f"{entry.name}{SIDECAR_SUFFIX}").exists():
            found[entry.name] = entry
    return found


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return file_sha256(handle)[1]


@dataclass
class Replay:
    """A chain read through: the archives it says are there, and those it recorded as deleted."""

    live: dict[str, dict] = field(default_factory=dict)
    deleted: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def replay(path: Path, parsed: ParsedChain, key: Ed25519PublicKey) -> Replay:
    result = Replay(problems=list(parsed.problems))
    previous = None
    for index, entry in enumerate(parsed.entries):
        what = f"{path}: entry {entry.get('seq', '?')} ({entry.get('kind', '?')} {entry.get('name', '')})".rstrip()
        if not signature_ok(entry, key):
            result.problems.append(f"{what} has no valid signature: it was altered or forged")
        if entry.get("seq") != index:
            result.problems.append(f"{what} is at position {index}: entries were removed, inserted or reordered")
        elif entry.get("prev") != (entry_hash(previous) if previous is not None else GENESIS):
            result.problems.append(f"{what} does not follow the entry before it: removed, inserted or reordered")
        previous = entry
        name, kind = entry.get("name"), entry.get("kind")
        if kind == "archive":
            if name in result.live:
                result.problems.append(f"{what} records {name} a second time")
            result.live[name] = entry
            result.deleted.pop(name, None)
        elif kind == "delete":
            if result.live.pop(name, None) is None:
                result.problems.append(f"{what} deletes {name}, which the chain does not hold")
            result.deleted[name] = entry
        elif kind != "open" or index:
            result.problems.append(f"{what} is of an unknown kind")
    if not parsed.entries or parsed.entries[0].get("kind") != "open":
        result.problems.append(f"{path}: its first entry is not the chain's opening: the start was cut off")
    return result


def head_problems(path: Path, entries: list[dict], head: dict | None, key: Ed25519PublicKey) -> list[str]:
    """Whether the chain still reaches the head stored off the host (None: no head to compare with)."""
    if head is None:
        return []
    if not signature_ok(head, key):
        return [f"{path}: the off-host head has no valid signature"]
    seq = head.get("seq", -1)
    if len(entries) <= seq:
        return [
            f"{path} ends at entry {len(entries) - 1}, but the off-host head records entry {seq}: the chain was "
            "truncated or replaced by an older copy"
        ]
    if entry_hash(entries[seq]) != head.get("hash"):
        return [f"{path}: entry {seq} is not the one the off-host head records: the chain was rewritten on the host"]
    return []


def verify(
    directory: Path,
    log_class: str,
    key: Ed25519PublicKey,
    head: dict | None = None,
    *,
    pattern: str | None = None,
    digests=None,
) -> list[str]:
    """Every problem between a directory's chain for `log_class`, its archives and the off-host head."""
    sha256 = digests or sha256_of
    path = chain_path(directory, log_class)
    if not path.exists():
        problems = (
            [f"{path} is missing, but the off-host head records {head.get('seq', -1) + 1} entries"] if head else []
        )
        if pattern is not None:
            problems += [
                f"{archive} is not in the chain (there is none)"
                for archive in sorted(archives_on_disk(directory, pattern).values())
            ]
        return problems
    parsed = read_chain(path)
    result = replay(path, parsed, key)
    problems = result.problems + head_problems(path, parsed.entries, head, key)
    opening = parsed.entries[0] if parsed.entries else {}
    pattern = pattern or opening.get("pattern") or "*"
    on_disk = archives_on_disk(directory, pattern)
    for name, entry in sorted(result.live.items()):
        archive = directory / name
        if name not in on_disk:
            problems.append(f"{archive} is in the chain (entry {entry.get('seq')}) but missing")
        elif archive.stat().st_size != entry.get("size") or sha256(archive) != entry.get("sha256"):
            problems.append(f"{archive} differs from the archive the chain recorded (entry {entry.get('seq')})")
    for name, archive in sorted(on_disk.items()):
        if name in result.live:
            continue
        deleted = result.deleted.get(name)
        # Recorded as deleted, then the run stopped before the unlink: the next retention finishes it.
        if deleted is not None and deleted.get("sha256") == sha256(archive):
            continue
        problems.append(f"{archive} is not in the chain: it was added after archiving")
    return problems


def describe(path: Path, entries: list[dict]) -> str:
    """One line on a verified chain: what it holds and the time its archives' lines span."""
    archived = [entry for entry in entries if entry.get("kind") == "archive"]
    deleted = {entry.get("name") for entry in entries if entry.get("kind") == "delete"}
    held = [entry for entry in archived if entry.get("name") not in deleted]
    span = [entry.get("lines_from") or entry.get("lines_to") for entry in held] + [entry["lines_to"] for entry in held]
    times = sorted(moment for moment in span if moment)
    when = f", lines from {times[0]} to {times[-1]}" if times else ""
    return (
        f"{path}: verified, {len(entries)} entries, {len(held)} archive(s) held{when}, "
        f"{len(deleted)} deleted by retention"
    )


# --- the chain a run appends to ------------------------------------------------------------------------------------


class Chain:
    """One directory's chain, loaded at the start of a run and rewritten (atomically) on every append."""

    def __init__(self, directory: Path, log_class: str, key: Ed25519PrivateKey):
        self.directory = directory
        self.log_class = log_class
        self.path = chain_path(directory, log_class)
        self._key = key
        self.exists = self.path.exists()
        # Appends keep what is there byte for byte, lines that are no entry included: they are evidence.
        self._written = self.path.read_bytes() if self.exists else b""
        if self._written and not self._written.endswith(b"\n"):
            self._written += b"\n"
        self.entries = read_chain(self.path).entries if self.exists else []

    def _append(self, new: list[dict], at: datetime) -> None:
        """Sign and link `new` after the last entry, and write the chain once for all of them."""
        signed_entries = []
        previous = self.entries[-1] if self.entries else None
        for entry in new:
            entry = {
                **entry,
                "seq": len(self.entries) + len(signed_entries),
                "at": isotime(at),
                "prev": entry_hash(previous) if previous is not None else GENESIS,
            }
            previous = sign(entry, self._key)
            signed_entries.append(previous)
        write_chain(self.path, signed_entries, prefix=self._written)
        self._written += b"".join(canonical(entry) + b"\n" for entry in signed_entries)
        self.entries += signed_entries
        self.exists = True

    def open(self, *, host: str, pattern: str, at: datetime, enrolled: Iterable[tuple[Path, str, float]]) -> None:
        """The opening entry, then an entry for each of `enrolled` (path, sha256, time of its newest line)."""
        opening = {
            "kind": "open",
            "log_class": self.log_class,
            "host": host,
            "directory": str(self.directory),
            "pattern": pattern,
        }
        entries = [opening]
        for archive, sha256, lines_to in enrolled:
            entries.append(
                {**self._archive_entry(archive, archive.stat().st_size, sha256, lines_to, entries), "enrolled": True}
            )
        self._append(entries, at)

    def _archive_entry(self, archive: Path, size: int, sha256: str, lines_to: float, before: list[dict]) -> dict:
        match = ROTATED_NAME.match(archive.name)
        lines_from = None
        for entry in reversed([*self.entries, *before]):
            earlier = ROTATED_NAME.match(entry.get("name") or "")
            if entry.get("kind") == "archive" and match and earlier and earlier["base"] == match["base"]:
                lines_from = entry.get("lines_to")
                break
        return {
            "kind": "archive",
            "name": archive.name,
            "size": size,
            "sha256": sha256,
            "lines_from": lines_from,
            "lines_to": isotime(lines_to),
        }

    def record_archive(self, archive: Path, size: int, sha256: str, lines_to: float, at: datetime) -> None:
        self._append([self._archive_entry(archive, size, sha256, lines_to, [])], at)

    def recorded_sha256(self, name: str) -> str | None:
        """The sha256 the chain holds for archive `name` while it is live, or None."""
        for entry in reversed(self.entries):
            if entry.get("name") == name:
                return entry.get("sha256") if entry.get("kind") == "archive" else None
        return None

    def record_deletions(self, deletions: list[tuple[Path, str, str]], at: datetime) -> None:
        """One entry per (archive, sha256, reason), written together before the archives go."""
        self._append(
            [
                {"kind": "delete", "name": path.name, "sha256": sha256, "reason": reason}
                for path, sha256, reason in deletions
            ],
            at,
        )

    def head(self) -> dict:
        return head_of(self.entries, self._key)


class ChainBook:
    """The chains of one run of one class, by directory: where rotation and retention record what they did."""

    def __init__(self, key: Ed25519PrivateKey, now: datetime):
        self._key = key
        self.now = now
        self.chains: dict[Path, Chain] = {}

    def chain(self, directory: Path, log_class: str) -> Chain:
        if directory not in self.chains:
            self.chains[directory] = Chain(directory, log_class, self._key)
        return self.chains[directory]

    def record_archive(self, archive: Path, size: int, sha256: str, lines_to: float) -> None:
        self.chains[archive.parent].record_archive(archive, size, sha256, lines_to, self.now)

    def record_deletions(self, deletions: list[tuple[Path, str]]) -> None:
        """Record (archive, reason) deletions in their chains before they are carried out; an archive a stopped
        run already recorded as deleted is not recorded again."""
        by_chain: dict[Path, list[tuple[Path, str, str]]] = {}
        for archive, reason in deletions:
            chain = self.chains[archive.parent]
            if chain.recorded_sha256(archive.name) is None and any(
                entry.get("name") == archive.name for entry in chain.entries
            ):
                continue  # recorded by a run that stopped before the unlink
            sha256 = chain.recorded_sha256(archive.name) or sha256_of(archive)
            by_chain.setdefault(archive.parent, []).append((archive, sha256, reason))
        for directory, entries in by_chain.items():
            self.chains[directory].record_deletions(entries, self.now)
