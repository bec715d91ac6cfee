"""Benchmark: rotate + compress N GB of realistic log lines, ours (trading_ops.logs) vs Debian's logrotate.

    .venv/bin/python bench/logs.py            # 1 GB (the default) in 8 files
    .venv/bin/python bench/logs.py 0.25       # a quarter GB
    .venv/bin/python bench/logs.py 1 --files 16 --workdir /var/tmp/x

Both sides get identical copies of the same files, written just before (so both read from the page cache), in the
same run. logrotate is run with `compress` (gzip -6, its default) and `nodelaycompress`; ours with the shipped
policy's compressor and level, as the DAG runs it (rename, archive, sha256 sidecar, signed chain entry, retention
and chain verification, the chain's head stored in a local repository). Extra rows: ours with age encryption (as
for audit logs) and ours with the gzip option, and bare `zstd -T0 -1 --rm` over the same files: the compressor's
own limit. Ours is checked afterwards: every archive decompresses to the original bytes. Targets: ours at least 3x
faster than logrotate + gzip, output no larger (sidecars included); ours within 1.25x of bare zstd's time.

The lines imitate a trading API's log: access lines with request ids, order lifecycle lines with increasing order
ids, market-data and pool lines, warnings and occasional multi-line tracebacks. A unique block is generated once
(Python is slow at it) and each file is that block started at a different line, so no file repeats itself within
any compressor's window. logrotate is installed with apt-get when missing and possible; otherwise its side is
skipped with a message.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from trading_ops.logs.archives import extract_archive  # noqa: E402
from trading_ops.logs.run import rotate_log_class  # noqa: E402
from trading_ops.policy import DEFAULT_POLICY_PATH, parse_policy  # noqa: E402
from trading_ops.streams import EncryptionKey, Recipients  # noqa: E402

MB = 1024**2


def log_lines(seed: int = 7):
    rnd = random.Random(seed)
    moment = 1_790_000_000.0
    symbols = ["AAPL", "MSFT", "005930.KS", "000660.KS", "TSLA", "NVDA", "AMZN", "035420.KS", "GOOGL", "META"]
    paths = ["/api/v1/orders", "/api/v1/orders/{o}", "/api/v1/portfolio/{u}", "/api/v1/market/{s}/quote", "/healthz"]
    users = [f"u{rnd.randrange(10**5):05d}" for _ in range(3000)]
    order = 48_000_000
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/trading/api/orders.py", line 214, in place_order\n    result = await self.router.submit(order)\n'
        '  File "/app/trading/router.py", line 88, in submit\n    raise ExchangeTimeout(venue, elapsed)\n'
        "trading.router.ExchangeTimeout: venue {venue} did not answer in {ms} ms\n"
    )
    while True:
        moment += rnd.expovariate(1500)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1e6):06d}Z"
        pid = 1000 + rnd.randrange(8)
        user, symbol, kind = rnd.choice(users), rnd.choice(symbols), rnd.random()
        if kind < 0.55:
            path = rnd.choice(paths).format(o=order - rnd.randrange(500), u=user, s=symbol)
            status = rnd.choices((200, 201, 204, 400, 404, 500), (80, 8, 4, 4, 3, 1))[0]
            method = rnd.choice(("GET", "GET", "GET", "POST", "DELETE"))
            yield (
                f"{stamp} INFO  [trading-api:{pid}] access: {method} {path} status={status} "
                f"duration_ms={rnd.lognormvariate(2.3, 0.7):.1f} user={user} req_id={rnd.getrandbits(48):012x}\n"
            )
        elif kind < 0.80:
            order += 1
            state = rnd.choice(("accepted", "filled", "partially_filled", "cancelled"))
            yield (
                f"{stamp} INFO  [trading-api:{pid}] orders: order {order} {state} symbol={symbol} "
                f"side={rnd.choice(('BUY', 'SELL'))} qty={rnd.randrange(1, 50) * 10} type=LIMIT "
                f"price={rnd.randrange(1000, 90000) / 100:.2f} user={user}\n"
            )
        elif kind < 0.92:
            yield (
                f"{stamp} DEBUG [trading-api:{pid}] marketdata: ingested {rnd.randrange(100, 900)} ticks for {symbol} "
                f"in {rnd.randrange(2, 40)} ms\n"
            )
        elif kind < 0.97:
            yield (
                f"{stamp} INFO  [trading-api:{pid}] db.pool: active={rnd.randrange(10)} idle={rnd.randrange(10)} "
                f"waiting=0 max=20\n"
            )
        elif kind < 0.995:
            exposure = rnd.randrange(80, 100)
            yield f"{stamp} WARN  [trading-api:{pid}] risk: user {user} exposure at {exposure}% of limit for {symbol}\n"
        else:
            venue = rnd.choice(("KRX", "NASDAQ", "NYSE"))
            yield f"{stamp} ERROR [trading-api:{pid}] orders: order {order} failed\n" + traceback.format(
                venue=venue, ms=rnd.randrange(500, 3000)
            )


def make_block(size: int) -> bytes:
    parts, total = [], 0
    for line in log_lines():
        parts.append(line)
        total += len(line)
        if total >= size:
            break
    return "".join(parts).encode()


def write_corpus(block: bytes, files: int, directories: list[Path]) -> dict[str, str]:
    """`files` files per directory, each the block started at a different line; returns name -> sha256."""
    digests = {}
    for index in range(files):
        cut = block.find(b"\n", index * len(block) // files) + 1 if index else 0
        content = block[cut:] + block[:cut]
        name = f"trading-api-{index:02d}.log"
        digests[name] = hashlib.sha256(content).hexdigest()
        for directory in directories:
            (directory / name).write_bytes(content)
    return digests


def ensure_logrotate() -> tuple[str | None, str]:
    found = shutil.which("logrotate") or next((p for p in ("/usr/sbin/logrotate",) if os.path.exists(p)), None)
    if found:
        return found, "found"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "logrotate is not installed and apt-get cannot be used here (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "logrotate"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            return None, f"apt-get install logrotate failed: {result.stderr.strip()[-300:]}"
    return shutil.which("logrotate") or "/usr/sbin/logrotate", "installed with apt-get"


def run_logrotate(binary: str, directory: Path) -> float:
    config = directory.parent / "logrotate.conf"
    config.write_text(
        f"{directory}/*.log {{\n  rotate 1000\n  compress\n  nodelaycompress\n  missingok\n  notifempty\n"
        "  dateext\n  dateformat .%Y%m%dT%H%M%S\n}\n"
    )
    started = time.perf_counter()
    subprocess.run([binary, "--force", "--state", str(directory.parent / "logrotate.state"), str(config)], check=True)
    return time.perf_counter() - started


def run_zstd(directory: Path, level: int) -> float:
    """Bare zstd over the same files, as fast as it goes: every core, originals removed like ours does."""
    files = sorted(str(path) for path in directory.glob("*.log"))
    started = time.perf_counter()
    subprocess.run(["zstd", "-T0", f"-{level}", "-q", "--rm", *files], check=True)
    return time.perf_counter() - started


def run_ours(directory: Path, *, compressor: str, encrypt: bool) -> tuple[float, object]:
    from pyrage import x25519

    from trading_ops.backup import Repository
    from trading_ops.logs.chain import generate_signing_key, signing_key, verify_key

    private, public = generate_signing_key()
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["logs"]["chain"]["public_key"] = public
    data["logs"]["compressor"] = compressor
    log_class = data["logs"]["classes"]["audit_logs" if encrypt else "application_logs"]
    log_class["paths"] = [{"directory": str(directory), "pattern": "*.log", "method": "rename"}]
    policy = parse_policy(data, "bench policy")
    identity = x25519.Identity.generate()
    started = time.perf_counter()
    rotate_log_class(
        "audit_logs" if encrypt else "application_logs",
        now=datetime.now(UTC),
        dry_run=False,
        recipients=Recipients((identity.to_public(),)),
        signer=signing_key(private, "bench", verify_key(public)),
        heads=Repository(directory.parent / "repository"),
        policy=policy,
    )
    return time.perf_counter() - started, identity


def output_bytes(directory: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.name.endswith(suffixes))


def check_ours(directory: Path, digests: dict[str, str], identity) -> None:
    for archive in directory.iterdir():
        if archive.name.endswith((".zst", ".gz", ".age")):
            out = io.BytesIO()
            extract_archive(archive, out, [EncryptionKey(identity)])
            original = archive.name.split(".log.")[0] + ".log"
            assert hashlib.sha256(out.getvalue()).hexdigest() == digests[original], f"{archive.name} differs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gb", nargs="?", type=float, default=1.0, help="total size of the logs in GiB (default 1)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir under /var/tmp")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    total = int(args.gb * 1024**3)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-logs-", dir="/var/tmp"))
    sides = ["logrotate", "ours_zstd", "ours_zstd_age", "ours_gzip", "zstd"]
    directories = {side: workdir / side / "logs" for side in sides}
    logrotate, how = ensure_logrotate()
    if logrotate is None:
        print(f"logrotate side SKIPPED: {how}")
        del directories["logrotate"]
    for directory in directories.values():
        directory.mkdir(parents=True)

    policy = parse_policy(yaml.safe_load(DEFAULT_POLICY_PATH.read_text()), "ops_policy.yaml")
    levels = policy.logs.compression_level
    try:
        started = time.perf_counter()
        block = make_block(total // args.files)
        digests = write_corpus(block, args.files, list(directories.values()))
        input_bytes = len(block) * args.files
        print(
            f"log rotation benchmark: {input_bytes / 1024**3:.2f} GiB in {args.files} files of trading-api-like lines "
            f"({len(block) / MB:.0f} MiB each), {os.cpu_count()} CPUs; corpus written in "
            f"{time.perf_counter() - started:.0f} s to {workdir}"
        )
        rows = []
        if logrotate:
            version = subprocess.run([logrotate, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
            seconds = run_logrotate(logrotate, directories["logrotate"])
            rows.append((f"{version} + gzip -6 ({how})", seconds, output_bytes(directories["logrotate"], (".gz",))))
        variants = [
            ("ours_zstd", f"ours zstd-{levels.zstd}", "zstd", False),
            ("ours_zstd_age", f"ours zstd-{levels.zstd} + age (audit)", "zstd", True),
            ("ours_gzip", f"ours gzip-{levels.gzip}", "gzip", False),
        ]
        # A worker imported what the project imports lazily (zstandard, pyrage, the chain's Ed25519) long before a
        # rotation: that is paid once here, untimed, on an empty directory, not by whichever variant runs first.
        warm_up = workdir / "warm-up" / "logs"
        warm_up.mkdir(parents=True)
        run_ours(warm_up, compressor="zstd", encrypt=True)
        for side, label, compressor, encrypt in variants:
            seconds, identity = run_ours(directories[side], compressor=compressor, encrypt=encrypt)
            size = output_bytes(directories[side], (".zst", ".gz", ".age", ".sha256", ".jsonl"))
            rows.append((label, seconds, size))
            check_ours(directories[side], digests, identity)
        ours_zstd_seconds = rows[-3][1]
        zstd_seconds = run_zstd(directories["zstd"], levels.zstd)
        rows.append((f"bare zstd -T0 -{levels.zstd} --rm", zstd_seconds, output_bytes(directories["zstd"], (".zst",))))

        print(f"{'side':52} {'seconds':>8} {'MiB/s':>7} {'output bytes':>14} {'ratio':>6}")
        for label, seconds, size in rows:
            print(f"{label:52} {seconds:8.2f} {input_bytes / MB / seconds:7.1f} {size:14,d} {input_bytes / size:6.2f}")
        print("ours: every archive decompressed (and decrypted) to the original bytes; output includes sidecars")
        zstd_ratio = ours_zstd_seconds / zstd_seconds
        zstd_met = zstd_ratio <= 1.25
        print(
            f"ours zstd-{levels.zstd} / bare zstd -T0 -{levels.zstd}: {zstd_ratio:.2f}x the time (target <= 1.25x): "
            f"{'MET' if zstd_met else 'NOT MET'}"
        )
        result = {
            "input_bytes": input_bytes,
            "files": args.files,
            "rows": rows,
            "vs_bare_zstd": zstd_ratio,
            "vs_bare_zstd_met": zstd_met,
        }
        if logrotate:
            (_, base_seconds, base_size), (_, ours_seconds, ours_size) = rows[0], rows[1]
            speedup, size_ratio = base_seconds / ours_seconds, ours_size / base_size
            met = speedup >= 3 and size_ratio <= 1
            print(
                f"speedup vs logrotate+gzip: {speedup:.2f}x (target >= 3x); output ours/logrotate: {size_ratio:.4f} "
                f"(target <= 1): {'MET' if met else 'NOT MET'}"
            )
            result.update(speedup=speedup, size_ratio=size_ratio, target_met=met)
        results = ROOT / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        (results / "logs.json").write_text(json.dumps(result, indent=2))
        return 0 if zstd_met and (not logrotate or result["target_met"]) else 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
