"""The `logs` commands of the main CLI (`python -m trading_ops logs ...`), for auditors and operators:

python -m trading_ops logs verify <dir> [--public-key KEY] [--repository PATH|URL]
    every chain in <dir> against its archives (and the off-host heads in the repository, when given); needs the
    public key only (the policy's `logs.chain.public_key` unless --public-key). Exit 0: clean; 1: one line per
    problem on stdout; 2: it cannot verify (no key, not a directory).
python -m trading_ops logs extract <archive> [-i <age identity file>] > original.log
    verify one archive against its sidecar, then write the original log to stdout. Exit 0: verified and
    extracted; 1: the archive does not match its sidecar (nothing is written); 2: it cannot be checked or read.
python -m trading_ops logs keygen
    a new Ed25519 pair for the chains: the private key (for the connection `logs.chain.signing_key_conn_id`) on
    stdout, the public key (for `logs.chain.public_key`) on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trading_ops.logs import chain as chains
from trading_ops.logs.archives import extract_archive
from trading_ops.logs.naming import sidecar_path
from trading_ops.logs.verify import archive_problem
from trading_ops.streams import EncryptionKey, EncryptionKeyError


def _public_key(text: str | None):
    if text is None:
        from trading_ops.policy import load_policy

        text = load_policy().logs.chain.public_key
    return chains.verify_key(text)


def logs_verify(args) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"{directory} is not a directory.", file=sys.stderr)
        return 2
    try:
        key = _public_key(args.public_key)
    except chains.ChainKeyError as exc:
        print(exc, file=sys.stderr)
        return 2
    repository = None
    if args.repository:
        from trading_ops.backup import Repository

        repository = Repository(args.repository)
    found = chains.chains_in(directory)
    if not found:
        print(f"{directory} holds no log chain ({chains.CHAIN_PREFIX}<class>{chains.CHAIN_SUFFIX}).")
        return 1
    problems = []
    for path in found:
        log_class = path.name.removeprefix(chains.CHAIN_PREFIX).removesuffix(chains.CHAIN_SUFFIX)
        entries = chains.read_chain(path).entries
        opening = entries[0] if entries else {}
        head = None
        if repository is not None:
            # Named as the run named it: from the opening entry, which is signed.
            name = chains.head_object_name(
                opening.get("host", "default"), log_class, opening.get("directory", str(directory))
            )
            data = repository.read_object(name)
            if data is None:
                problems.append(f"{path}: the repository holds no off-host head for it ({name})")
            else:
                head = json.loads(data)
        found_problems = chains.verify(directory, log_class, key, head)
        problems += found_problems
        if not found_problems:
            print(chains.describe(path, entries), file=sys.stderr)
    if repository is None:
        print(
            "Off-host heads not compared: give --repository to catch a chain cut short or rewritten.", file=sys.stderr
        )
    for problem in problems:
        print(problem)
    return 1 if problems else 0


def logs_extract(args) -> int:
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


def logs_keygen(args) -> int:
    private, public = chains.generate_signing_key()
    print(private)
    print(
        f"Public key, for logs.chain.public_key in the policy: {public}\n"
        "Store the first line as the password of the connection logs.chain.signing_key_conn_id names; whoever "
        "holds it can sign chain entries, so keep it out of the log hosts' reach.",
        file=sys.stderr,
    )
    return 0


def add_logs_commands(areas) -> None:
    """The `logs` group of the main CLI's parser."""
    logs = areas.add_parser("logs", help="verify log chains, extract archives, make a chain key")
    commands = logs.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="verify every chain of a log directory against its archives")
    verify.add_argument("directory", type=Path)
    verify.add_argument("--public-key", help="the chains' Ed25519 public key (default: logs.chain.public_key)")
    verify.add_argument("--repository", help="the backup repository (path or URL) holding the off-host heads")
    verify.set_defaults(run=logs_verify)

    extract = commands.add_parser("extract", help="verify an archive against its sidecar and write its log")
    extract.add_argument("archive", type=Path)
    extract.add_argument("-i", "--identity-file", type=Path, help="age identity file (age-keygen output) for .age")
    extract.set_defaults(run=logs_extract)

    keygen = commands.add_parser("keygen", help="a new Ed25519 key pair for the log chains")
    keygen.set_defaults(run=logs_keygen)
