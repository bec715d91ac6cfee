"""Log rotation on real files in temp folders: retention, caps, encryption, tampering, dry run, and no line lost
while a writer process appends as fast as it can."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
import zstandard
from pyrage import x25519

from tests.support.logs import CHAIN_PUBLIC_KEY, CLASSES, SIGNER, logs_cli, trading_ops_cli, tree
from trading_ops.backup.repository import repository_from_policy
from trading_ops.logs import chain
from trading_ops.logs.archives import ArchiveFormat, extract_archive, write_archive
from trading_ops.logs.report import LogRotationError
from trading_ops.logs.run import rotate_log_class
from trading_ops.policy import load_policy
from trading_ops.streams import Compression, EncryptionKey, EncryptionKeyError, Recipients

# Close to the wall clock: archives keep the mtime of the file they came from, which is "now" for files made here.
NOW = datetime.now(UTC).replace(microsecond=0)
IDENTITY = x25519.Identity.generate()
PUBLIC_KEY = str(IDENTITY.to_public())
RECIPIENTS = Recipients((IDENTITY.to_public(),))


@pytest.fixture
def logs_policy(tmp_path, make_policy):
    """The test policy with each class's first path in tmp_path/<class>; `changes` as for make_policy."""

    def _make(changes: dict | None = None):
        base = {}
        for name in CLASSES:
            (tmp_path / name).mkdir(exist_ok=True)
            base[f"logs.classes.{name}.paths.0.directory"] = str(tmp_path / name)
        return load_policy(make_policy({**base, **(changes or {})}))

    return _make


def run(policy, name, *, now=NOW, dry_run=False, host="default"):
    return rotate_log_class(
        name,
        now=now,
        dry_run=dry_run,
        recipients=RECIPIENTS,
        signer=SIGNER,
        heads=repository_from_policy(policy),
        policy=policy,
        host=host,
    )


def make_archive(directory: Path, name: str, content: bytes, age: timedelta, now=NOW) -> Path:
    """A real archive (zstd + sidecar) whose mtime is `age` before `now`."""
    final = directory / name
    write_archive(io.BytesIO(content), final, ArchiveFormat(Compression("zstd", 1)), mode=0o640)
    stamp = (now - age).timestamp()
    os.utime(final, (stamp, stamp))
    return final


def archive_name(base: str, age: timedelta, now=NOW) -> str:
    return f"{base}.{(now - age):%Y%m%dT%H%M%SZ}.zst"


def extracted(path: Path) -> bytes:
    out = io.BytesIO()
    extract_archive(path, out, [EncryptionKey(IDENTITY)])
    return out.getvalue()


# --- retention and caps -----------------------------------------------------------------------------------------


def test_retention_deletes_archives_older_than_the_retention_counted_from_the_logical_time(tmp_path, logs_policy):
    policy = logs_policy()
    directory = tmp_path / "application_logs"
    ages = {}
    for days in (1, 29, 31, 45):
        ages[days] = make_archive(
            directory, archive_name("api.log", timedelta(days=days)), b"x\n", timedelta(days=days)
        )
    active = directory / "api.log"
    active.write_text("")  # empty: not due, and older than any retention, yet never deleted
    os.utime(active, ((NOW - timedelta(days=400)).timestamp(),) * 2)

    report = run(policy, "application_logs")

    assert {days for days, path in ages.items() if path.exists()} == {1, 29}
    assert not any(Path(f"{ages[days]}.sha256").exists() for days in (31, 45))
    assert active.exists()
    assert report.archives_deleted == 2 and report.files_rotated == 0
    assert report.failures == [] and report.tampered == []
    # The same archives measured from a logical time 20 days later: the 29-day one is past 30 days now.
    later = run(policy, "application_logs", now=NOW + timedelta(days=20))
    assert later.archives_deleted == 1 and not ages[29].exists() and ages[1].exists()


def test_size_cap_deletes_the_oldest_archives_first_and_never_an_active_file(tmp_path, logs_policy):
    policy = logs_policy({"logs.classes.application_logs.max_size": "64KB"})
    directory = tmp_path / "application_logs"
    archives = []
    for index in range(300):
        # Incompressible 512 bytes each, so the sizes are predictable; oldest first, all within retention.
        content = random.Random(index).randbytes(512)
        age = timedelta(hours=300 - index)
        archives.append(make_archive(directory, archive_name("api.log", age), content, age))
    active = directory / "web.log"
    active.write_bytes(b"live line\n" * 3000)  # 30 KB, due (never rotated): archived before the cap is enforced
    footprint = {path: path.stat().st_size + Path(f"{path}.sha256").stat().st_size for path in archives}

    report = run(policy, "application_logs")

    kept = [path for path in archives if path.exists()]
    deleted = [path for path in archives if not path.exists()]
    assert deleted == archives[: len(deleted)], "deleted the oldest first"
    assert kept == archives[len(deleted) :]
    assert report.archives_deleted == len(deleted) and report.bytes_deleted == sum(footprint[p] for p in deleted)
    # The signed chain (a hidden file beside them) is never deleted and not counted against the cap.
    total = sum(path.stat().st_size for path in directory.iterdir() if not path.name.startswith(".chain."))
    assert total <= 64 * 1024 == report.max_size
    assert report.total_bytes == total
    # No more than needed: keeping the last one deleted would have left the class over its cap.
    assert total + footprint[deleted[-1]] > 64 * 1024
    assert active.exists() and active.stat().st_size == 0
    assert report.files_rotated == 1


def test_audit_archives_younger_than_retention_are_never_deleted_for_size_but_alert(tmp_path, logs_policy, alert_fakes):
    slack, _pagerduty = alert_fakes
    policy = logs_policy({"logs.classes.audit_logs.max_size": "4KB"})
    directory = tmp_path / "audit_logs"
    young = [
        make_archive(directory, archive_name("audit.log", timedelta(days=day)), os.urandom(1500), timedelta(days=day))
        for day in (10, 20, 30, 40)
    ]
    expired = make_archive(directory, archive_name("audit.log", timedelta(days=400)), b"old\n", timedelta(days=400))

    report = run(policy, "audit_logs")

    assert all(path.exists() for path in young)
    assert not expired.exists()
    assert report.archives_deleted == 1
    critical = [alert for alert in report.alerts if alert["severity"] == "critical"]
    assert len(critical) == 1 and "over its cap" in critical[0]["summary"] and "retention" in critical[0]["summary"]
    assert [message["channel"] for message in slack.messages()] == ["#alerts-critical"]


def test_a_class_over_the_alert_fraction_of_its_cap_raises_a_warning(tmp_path, logs_policy):
    policy = logs_policy({"logs.classes.application_logs.max_size": "10KB"})
    directory = tmp_path / "application_logs"
    make_archive(directory, archive_name("api.log", timedelta(days=1)), os.urandom(9300), timedelta(days=1))

    report = run(policy, "application_logs")

    assert report.archives_deleted == 0
    assert 0.9 < report.total_bytes / report.max_size <= 1
    assert [alert["severity"] for alert in report.alerts] == ["warning"]
    assert "of its cap" in report.alerts[0]["summary"]


# --- archives: encryption, integrity, naming -------------------------------------------------------------------------


@pytest.mark.parametrize("compressor", ["zstd", "gzip"])
def test_audit_logs_are_encrypted_and_decrypt_to_the_same_bytes(tmp_path, logs_policy, compressor):
    policy = logs_policy({"logs.compressor": compressor})
    directory = tmp_path / "audit_logs"
    original = b"".join(
        b"%d user=u%d action=login ip=10.0.0.%d secret-marker\n" % (n, n % 97, n % 250) for n in range(20000)
    )
    original += os.urandom(4096)  # and bytes that are not text
    (directory / "audit.log").write_bytes(original)

    report = run(policy, "audit_logs")

    suffix = {"zstd": ".zst.age", "gzip": ".gz.age"}[compressor]
    archive = directory / f"audit.log.{NOW:%Y%m%dT%H%M%SZ}{suffix}"
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["audit.log", archive.name, f"{archive.name}.sha256", ".chain.audit_logs.jsonl"]
    )
    ciphertext = archive.read_bytes()
    assert ciphertext.startswith(b"age-encryption.org/v1\n") and b"secret-marker" not in ciphertext
    compressed = pyrage.decrypt(ciphertext, [IDENTITY])
    if compressor == "zstd":
        plaintext = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed)).read()
    else:
        import gzip

        plaintext = gzip.decompress(compressed)
    assert plaintext == original
    assert extracted(archive) == original
    assert (directory / "audit.log").read_bytes() == b""
    assert report.bytes_before == len(original) and report.bytes_after == len(ciphertext)
    assert report.files_rotated == 1 and report.space_freed == len(original) - len(ciphertext)
    assert hashlib.sha256(ciphertext).hexdigest() == Path(f"{archive}.sha256").read_text().split()[0]
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(ciphertext, [x25519.Identity.generate()])


def test_an_encrypted_class_without_a_recipient_stops_before_anything_changes(tmp_path, logs_policy):
    policy = logs_policy()
    (tmp_path / "audit_logs" / "audit.log").write_text("line\n")
    before = tree(tmp_path)
    with pytest.raises(LogRotationError, match=r"^Log class audit_logs is encrypted but no age recipient"):
        rotate_log_class(
            "audit_logs", now=NOW, dry_run=False, recipients=None, signer=SIGNER, heads=None, policy=policy
        )
    assert tree(tmp_path) == before


def test_the_key_comes_from_the_connection_and_bad_values_are_one_sentence(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY", f'{{"conn_type": "generic", "password": "{PUBLIC_KEY}"}}'
    )
    assert [str(r) for r in Recipients.from_connection("audit_log_encryption_key").public_keys] == [PUBLIC_KEY]
    # An identity works too: its public key is used.
    monkeypatch.setenv("AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY", f'{{"conn_type": "generic", "password": "{IDENTITY}"}}')
    assert [str(r) for r in Recipients.from_connection("audit_log_encryption_key").public_keys] == [PUBLIC_KEY]
    monkeypatch.setenv("AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY", '{"conn_type": "generic", "password": "hunter2"}')
    with pytest.raises(EncryptionKeyError) as excinfo:
        Recipients.from_connection("audit_log_encryption_key")
    assert "hunter2" not in str(excinfo.value) and "not an age recipient" in str(excinfo.value)
    with pytest.raises(EncryptionKeyError, match="Connection no_such_key is missing"):
        Recipients.from_connection("no_such_key")


def test_tampering_is_detected_on_the_next_run_and_pages(tmp_path, logs_policy, alert_fakes):
    slack, pagerduty = alert_fakes
    policy = logs_policy()
    directory = tmp_path / "audit_logs"
    for name in ("a.log", "b.log", "c.log"):
        (directory / name).write_text(f"{name} line\n" * 100)
    run(policy, "audit_logs")
    archives = {path.name.split(".")[0]: path for path in directory.glob("*.age")}
    assert len(archives) == 3
    clean = run(policy, "audit_logs")
    assert clean.tampered == [] and clean.alerts == []

    flipped = bytearray(archives["a"].read_bytes())
    flipped[-1] ^= 1
    archives["a"].write_bytes(bytes(flipped))
    Path(f"{archives['b']}.sha256").unlink()
    archives["c"].unlink()

    report = run(policy, "audit_logs")

    assert sorted(report.tampered) == sorted(
        [
            f"{archives['a']} does not match its sha256 sidecar",
            f"{archives['b']} has no sha256 sidecar",
            f"{archives['c']} is listed by {archives['c'].name}.sha256 but missing",
        ]
    )
    # The chain sees the altered and the deleted archive too (the missing sidecar is no chain matter).
    assert sorted(report.chain_problems) == sorted(
        [
            f"{archives['a']} differs from the archive the chain recorded (entry 1)",
            f"{archives['c']} is in the chain (entry 3) but missing",
        ]
    )
    assert [alert["severity"] for alert in report.alerts] == ["critical", "critical"]
    assert report.alerts[1]["summary"] == "audit_logs: 3 archive(s) fail their integrity check"
    chain_message, message = slack.messages()
    assert message["channel"] == "#alerts-critical"
    assert "audit_logs: 3 archive(s) fail their integrity check" in message["text"]
    assert f"{archives['a']} does not match its sha256 sidecar" in message["text"]
    assert "audit_logs: the signed chain of archives shows 2 problem(s)" in chain_message["text"]
    _chain_event, event = pagerduty.events()
    assert event["payload"]["summary"] == "[P1] audit_logs: 3 archive(s) fail their integrity check"


def test_an_interrupted_run_leaves_nothing_the_next_run_does_not_clean(tmp_path, logs_policy):
    policy = logs_policy()
    directory = tmp_path / "application_logs"
    # A crash after the sidecar, before the archive's rename; and a crash after a rename, before compression.
    final = directory / archive_name("api.log", timedelta(days=2))
    (directory / f".{final.name}.part").write_bytes(b"half an archive")
    Path(f"{final}.sha256").write_text(f"{'0' * 64}  {final.name}\n")
    rotated = directory / f"api.log.{(NOW - timedelta(days=1)):%Y%m%dT%H%M%SZ}"
    rotated.write_text("rotated but not compressed\n")

    report = run(policy, "application_logs")

    assert sorted(p.name for p in directory.iterdir()) == [
        ".chain.application_logs.jsonl",
        f"{rotated.name}.zst",
        f"{rotated.name}.zst.sha256",
    ]
    assert extracted(directory / f"{rotated.name}.zst") == b"rotated but not compressed\n"
    assert report.tampered == [] and report.failures == []


def test_rotated_names_are_sortable_utc_stamps_and_never_collide(tmp_path, logs_policy):
    policy = logs_policy({"logs.rotate_over_size": "10B"})
    directory = tmp_path / "application_logs"
    for line in ("first", "second", "third"):
        (directory / "api.log").write_text(f"{line} rotation of the day\n")
        run(policy, "application_logs")
    names = sorted(p.name for p in directory.glob("*.zst"))
    stamp = f"{NOW:%Y%m%dT%H%M%SZ}"
    assert names == [f"api.log.{stamp}-1.zst", f"api.log.{stamp}-2.zst", f"api.log.{stamp}.zst"]
    assert extracted(directory / f"api.log.{stamp}-2.zst") == b"third rotation of the day\n"
    # Not due again the same day when small: the last rotation is younger than rotate_after.
    (directory / "api.log").write_text("x\n")
    policy = logs_policy({"logs.rotate_over_size": "1MB"})
    assert run(policy, "application_logs").files_rotated == 0
    assert run(policy, "application_logs", now=NOW + timedelta(days=1)).files_rotated == 1


def test_an_audit_archive_is_verified_and_extracted_by_hand_with_the_module_cli(tmp_path, logs_policy):
    policy = logs_policy()
    directory = tmp_path / "audit_logs"
    original = b"".join(b"%d login ok\n" % n for n in range(3000))
    (directory / "audit.log").write_bytes(original)
    run(policy, "audit_logs")
    (archive,) = directory.glob("*.zst.age")
    identity_file = tmp_path / "audit-key.txt"
    identity_file.write_text(f"# created by age-keygen\n# public key: {PUBLIC_KEY}\n{IDENTITY}\n")

    good = logs_cli(archive, identity_file)
    assert good.returncode == 0, good.stderr
    assert good.stdout == original and b"sha256 verified" in good.stderr

    wrong_key = tmp_path / "other-key.txt"
    wrong_key.write_text(f"{x25519.Identity.generate()}\n")
    wrong = logs_cli(archive, wrong_key)
    assert wrong.returncode == 2 and wrong.stdout == b"" and b"cannot be decrypted with key" in wrong.stderr

    archive.write_bytes(archive.read_bytes()[:-1] + b"!")
    bad = logs_cli(archive, identity_file)
    assert bad.returncode == 1 and bad.stdout == b"" and b"does NOT match" in bad.stderr


# --- dry run ---------------------------------------------------------------------------------------------------


def test_dry_run_lists_every_action_and_changes_nothing(tmp_path, logs_policy):
    policy = logs_policy({"logs.classes.application_logs.max_size": "8KB"})
    app, system, audit = (tmp_path / name for name in CLASSES)
    (app / "api.log").write_bytes(os.urandom(3000))
    for days in (2, 3, 4, 40):
        make_archive(app, archive_name("api.log", timedelta(days=days)), os.urandom(2000), timedelta(days=days))
    (app / f".{archive_name('api.log', timedelta(days=5))}.part").write_bytes(b"leftover")
    (system / "kernel.log").write_text("kernel line\n" * 50)
    (audit / "audit.log").write_text("audit line\n" * 50)
    pending = audit / f"audit.log.{(NOW - timedelta(days=1)):%Y%m%dT%H%M%SZ}"
    pending.write_text("rotated, not yet archived\n")
    before = tree(tmp_path)

    reports = {name: run(policy, name, dry_run=True) for name in CLASSES}

    assert tree(tmp_path) == before
    actions = {name: report.actions for name, report in reports.items()}
    assert any(a.startswith("remove ") and ".part" in a for a in actions["application_logs"])
    assert any(a.startswith(f"rotate {app / 'api.log'}") and "renaming" in a for a in actions["application_logs"])
    assert any("older than the retention" in a for a in actions["application_logs"])
    assert any("over its cap" in a for a in actions["application_logs"])
    assert any(a.startswith(f"rotate {system / 'kernel.log'}") and "copytruncate" in a for a in actions["system_logs"])
    assert any(a.startswith(f"archive {pending} to {pending.name}.zst.age") for a in actions["audit_logs"])
    assert all(report.dry_run for report in reports.values())


def test_a_dry_run_checks_the_reopen_setting_as_the_real_run_needs_it(tmp_path, logs_policy):
    policy = logs_policy({"logs.classes.application_logs.paths.0.reopen_command": "no-such-reopen-program --reload"})
    (tmp_path / "application_logs" / "api.log").write_text("line\n" * 100)
    before = tree(tmp_path)

    report = run(policy, "application_logs", dry_run=True)

    assert tree(tmp_path) == before
    assert report.failures == [
        f"reopen the writers of {tmp_path / 'application_logs'}: The reopen_command of "
        f"{tmp_path / 'application_logs'} runs no-such-reopen-program, which is not an executable program here."
    ]
    assert any(action.startswith(f"rotate {tmp_path / 'application_logs' / 'api.log'}") for action in report.actions)


# --- no line lost while a writer appends as fast as it can ---------------------------------------------------------

WRITER = r"""
import os, signal, sys
path, mode, pidfile = sys.argv[1:4]
state = {"reopen": False, "stop": False}
signal.signal(signal.SIGHUP, lambda *_: state.update(reopen=True))
signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
flags = os.O_WRONLY | os.O_CREAT | (0 if mode == "no-append" else os.O_APPEND)
fd = os.open(path, flags, 0o644)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
n = 0
while not state["stop"]:
    if state["reopen"] and mode == "reopen":
        state["reopen"] = False
        os.close(fd)
        fd = os.open(path, flags, 0o644)
    os.write(fd, b"%d seq\n" % n)
    n += 1
os.close(fd)
print(n)
"""


class Writer:
    """A separate process appending `<n> seq` lines as fast as it can (one write(2) per line)."""

    def __init__(self, path: Path, mode: str):
        self.pidfile = path.with_name(f".{path.name}.pid")
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), mode, str(self.pidfile)], stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 10
        while not (self.pidfile.exists() and path.exists() and path.stat().st_size > 10_000):
            assert time.monotonic() < deadline, "writer did not start"
            time.sleep(0.01)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        return int(out)


def all_sequence_numbers(directory: Path) -> list[int]:
    numbers = []
    for path in directory.iterdir():
        if path.name.startswith(".") or path.name.endswith(".sha256"):
            continue
        content = extracted(path) if path.suffix in (".zst", ".gz", ".age") else path.read_bytes()
        assert b"\0" not in content.lstrip(b"\0"), f"NUL bytes inside {path.name}"
        numbers += [int(line.split()[0]) for line in content.lstrip(b"\0").splitlines()]
    return numbers


@pytest.mark.parametrize(
    ("log_class", "method", "writer_mode"),
    [
        ("application_logs", "rename", "reopen"),
        ("audit_logs", "rename", "reopen"),
        ("system_logs", "copytruncate", "append"),
        ("system_logs", "copytruncate", "no-append"),
    ],
)
def test_no_line_is_lost_while_a_writer_appends_during_rotation(tmp_path, logs_policy, log_class, method, writer_mode):
    directory = tmp_path / log_class
    directory.mkdir()
    active = directory / "busy.log"
    path_key = f"logs.classes.{log_class}.paths.0"
    writer = Writer(active, writer_mode)
    try:
        policy = logs_policy(
            {
                "logs.rotate_over_size": "1KB",
                f"{path_key}.method": method,
                f"{path_key}.pidfile": str(writer.pidfile) if method == "rename" else None,
            }
        )
        reports = []
        for day in range(4):
            time.sleep(0.2)
            reports.append(run(policy, log_class, now=NOW + timedelta(days=day)))
    finally:
        written = writer.stop()

    assert all(report.failures == [] for report in reports), [r.failures for r in reports]
    assert sum(report.files_rotated for report in reports) == 4
    numbers = all_sequence_numbers(directory)
    assert written > 10_000
    assert len(numbers) == written and sorted(numbers) == list(range(written)), "every line exactly once"
    archives = [p for p in directory.iterdir() if p.name.endswith((".zst", ".zst.age"))]
    assert len(archives) == 4
    if log_class == "audit_logs":
        assert all(p.name.endswith(".zst.age") for p in archives)
    padding_warnings = [w for r in reports for w in r.warnings if "NUL padding" in w]
    assert bool(padding_warnings) == (writer_mode == "no-append")


def test_a_rotated_file_still_held_by_its_writer_is_archived_by_a_later_run(tmp_path, logs_policy):
    directory = tmp_path / "application_logs"
    directory.mkdir()
    active = directory / "stubborn.log"
    writer = Writer(active, "append")  # never reopens: keeps writing into the renamed file
    try:
        policy = logs_policy({"logs.reopen_timeout": "1s"})
        first = run(policy, "application_logs")
        time.sleep(0.1)
    finally:
        written = writer.stop()
    rotated = directory / f"stubborn.log.{NOW:%Y%m%dT%H%M%SZ}"
    assert rotated.exists() and first.files_rotated == 1 and first.bytes_before == 0
    assert any("still open for writing by pid" in warning for warning in first.warnings)
    assert [alert["severity"] for alert in first.alerts] == ["warning"]
    assert "still open for writing by pid" in first.alerts[0]["problems"]

    second = run(policy, "application_logs")

    assert not rotated.exists() and Path(f"{rotated}.zst").exists()
    assert second.bytes_before == len(extracted(Path(f"{rotated}.zst")))
    assert sorted(all_sequence_numbers(directory)) == list(range(written))


# --- the signed chain of archives ---------------------------------------------------------------------------------


def audit_run_with_archives(tmp_path, logs_policy, names=("a.log", "b.log", "c.log")):
    """A policy, and a first audit run that archived one file per name; returns (policy, directory, archives)."""
    policy = logs_policy()
    directory = tmp_path / "audit_logs"
    for name in names:
        (directory / name).write_text(f"{name} line\n" * 100)
    first = run(policy, "audit_logs")
    assert first.chain_problems == [] and first.alerts == []
    archives = {path.name.split(".")[0]: path for path in directory.glob("*.age")}
    return policy, directory, archives


def chain_entries(directory: Path, log_class: str = "audit_logs") -> list[dict]:
    return chain.read_chain(chain.chain_path(directory, log_class)).entries


def relinked(entries: list[dict]) -> list[dict]:
    """`entries` renumbered, relinked and signed again with the real key: what someone holding the key writes."""
    out = []
    for index, entry in enumerate(entries):
        unsigned = {key: value for key, value in entry.items() if key != "sig"}
        unsigned.update(seq=index, prev=chain.entry_hash(out[-1]) if out else chain.GENESIS)
        out.append(chain.sign(unsigned, SIGNER))
    return out


def test_each_archive_and_its_time_range_is_recorded_in_a_signed_chain(tmp_path, logs_policy):
    _policy, directory, archives = audit_run_with_archives(tmp_path, logs_policy)
    opening, *entries = chain_entries(directory)
    assert opening["kind"] == "open" and opening["log_class"] == "audit_logs" and opening["host"] == "default"
    assert [entry["name"] for entry in entries] == sorted(path.name for path in archives.values())
    for entry in entries:
        path = directory / entry["name"]
        assert entry["kind"] == "archive" and entry["size"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["lines_from"] is None  # the first archive of its file
        assert datetime.fromisoformat(entry["lines_to"]).timestamp() == pytest.approx(path.stat().st_mtime, abs=1)
    previous = [opening, *entries]
    assert all(entry["prev"] == chain.entry_hash(before) for before, entry in zip(previous, entries, strict=False))
    assert all(chain.signature_ok(entry, chain.verify_key(CHAIN_PUBLIC_KEY)) for entry in previous)
    # The next archive of a.log starts where the first one ended.
    (directory / "a.log").write_text("later line\n")
    run(logs_policy(), "audit_logs", now=NOW + timedelta(days=1))
    newest = chain_entries(directory)[-1]
    assert newest["name"].startswith("a.log.") and newest["lines_from"] == entries[0]["lines_to"]


def test_deleting_an_archive_with_its_sidecar_and_forging_one_with_a_recomputed_sidecar_page(
    tmp_path, logs_policy, alert_fakes
):
    slack, pagerduty = alert_fakes
    policy, directory, archives = audit_run_with_archives(tmp_path, logs_policy)
    # What the tester did: the sidecars agree with the files, so they alone see nothing.
    archives["a"].unlink()
    Path(f"{archives['a']}.sha256").unlink()
    forged = b"age-encryption.org/v1\nforged\n"
    archives["b"].write_bytes(forged)
    Path(f"{archives['b']}.sha256").write_text(f"{hashlib.sha256(forged).hexdigest()}  {archives['b'].name}\n")
    slipped_in = directory / f"c.log.{(NOW - timedelta(days=3)):%Y%m%dT%H%M%SZ}.zst.age"
    slipped_in.write_bytes(forged)
    Path(f"{slipped_in}.sha256").write_text(f"{hashlib.sha256(forged).hexdigest()}  {slipped_in.name}\n")

    report = run(policy, "audit_logs")

    assert report.tampered == []
    assert sorted(report.chain_problems) == sorted(
        [
            f"{archives['a']} is in the chain (entry 1) but missing",
            f"{archives['b']} differs from the archive the chain recorded (entry 2)",
            f"{slipped_in} is not in the chain: it was added after archiving",
        ]
    )
    assert report.alerts[0]["severity"] == "critical"
    assert report.alerts[0]["summary"] == "audit_logs: the signed chain of archives shows 3 problem(s)"
    (message,) = slack.messages()
    assert message["channel"] == "#alerts-critical" and str(archives["a"]) in message["text"]
    (event,) = pagerduty.events()
    assert event["payload"]["summary"] == "[P1] audit_logs: the signed chain of archives shows 3 problem(s)"
    # The evidence stays: the next run says it again.
    assert len(run(policy, "audit_logs").chain_problems) == 3


def test_a_truncated_chain_is_caught(tmp_path, logs_policy, alert_fakes):
    policy, directory, archives = audit_run_with_archives(tmp_path, logs_policy)
    path = chain.chain_path(directory, "audit_logs")
    lines = path.read_bytes().splitlines(keepends=True)
    # The last entry dropped, with its archive: consistent on its own, short of the off-host head.
    path.write_bytes(b"".join(lines[:-1]))
    archives["c"].unlink()
    Path(f"{archives['c']}.sha256").unlink()
    assert chain.verify(directory, "audit_logs", chain.verify_key(CHAIN_PUBLIC_KEY)) == []

    report = run(policy, "audit_logs")
    assert report.chain_problems == [
        f"{path} ends at entry 2, but the off-host head records entry 3: the chain was truncated or replaced by an "
        "older copy"
    ]
    assert [alert["severity"] for alert in report.alerts] == ["critical"]

    # Cut in the middle of a line: that line is no entry, and what follows no longer links.
    path.write_bytes(b"".join(lines[:2]) + lines[2][:40] + b"\n" + lines[3])
    problems = run(policy, "audit_logs").chain_problems
    assert f"{path}: line 3 is not a whole chain entry (truncated or altered)" in problems
    assert any("entries were removed, inserted or reordered" in problem for problem in problems), problems


def test_reordered_entries_are_caught(tmp_path, logs_policy):
    policy, directory, _archives = audit_run_with_archives(tmp_path, logs_policy)
    path = chain.chain_path(directory, "audit_logs")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))

    report = run(policy, "audit_logs")

    assert report.chain_problems and all("reordered" in problem for problem in report.chain_problems)
    assert report.alerts[0]["severity"] == "critical"


def test_an_altered_entry_fails_its_signature_and_other_classes_warn(tmp_path, logs_policy):
    policy = logs_policy()
    directory = tmp_path / "application_logs"
    (directory / "api.log").write_text("line\n" * 50)
    run(policy, "application_logs")
    path = chain.chain_path(directory, "application_logs")
    entries = chain_entries(directory, "application_logs")
    entries[1]["size"] += 1
    chain.write_chain(path, entries)

    report = run(policy, "application_logs")

    assert any("has no valid signature" in problem for problem in report.chain_problems)
    assert [alert["severity"] for alert in report.alerts] == ["warning"]


def test_retention_deletions_are_recorded_in_the_chain_and_verify_clean(tmp_path, logs_policy):
    policy = logs_policy()
    directory = tmp_path / "application_logs"
    old = make_archive(directory, archive_name("api.log", timedelta(days=25)), b"old\n", timedelta(days=25))
    (directory / "api.log").write_text("line\n" * 10)
    assert run(policy, "application_logs").chain_problems == []

    later = run(policy, "application_logs", now=NOW + timedelta(days=10))

    assert later.archives_deleted == 1 and not old.exists()
    deletion = chain_entries(directory, "application_logs")[-1]
    assert deletion["kind"] == "delete" and deletion["name"] == old.name and "retention" in deletion["reason"]
    assert later.chain_problems == [] and later.alerts == []
    assert run(policy, "application_logs", now=NOW + timedelta(days=10)).chain_problems == []


def test_the_off_host_head_catches_a_chain_rewritten_on_the_host(tmp_path, logs_policy):
    policy, directory, archives = audit_run_with_archives(tmp_path, logs_policy)
    # Someone holding the key replaces b's archive and rewrites the chain to match: consistent, every entry signed.
    forged = b"age-encryption.org/v1\nforged\n"
    archives["b"].write_bytes(forged)
    Path(f"{archives['b']}.sha256").write_text(f"{hashlib.sha256(forged).hexdigest()}  {archives['b'].name}\n")
    entries = chain_entries(directory)
    entries[2].update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged))
    path = chain.chain_path(directory, "audit_logs")
    chain.write_chain(path, relinked(entries))
    assert chain.verify(directory, "audit_logs", chain.verify_key(CHAIN_PUBLIC_KEY)) == []

    report = run(policy, "audit_logs")

    assert report.chain_problems == [
        f"{path}: entry 3 is not the one the off-host head records: the chain was rewritten on the host"
    ]
    assert report.alerts[0]["severity"] == "critical"
    # The head is left as it was, so every later run says it again; and removing the chain does not help.
    assert len(run(policy, "audit_logs").chain_problems) == 1
    path.unlink()
    problems = run(policy, "audit_logs").chain_problems
    assert f"{path} is missing, but the off-host head records 4 entries" in problems


def logs_verify(capsys, *argv: str) -> tuple[int, list[str], str]:
    """`python -m trading_ops logs verify <argv>` in this process: exit code, stdout lines, stderr."""
    from trading_ops.__main__ import main

    capsys.readouterr()
    code = main(["logs", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_logs_verify_checks_a_directory_by_hand_with_the_public_key_only(tmp_path, logs_policy, capsys):
    policy, directory, archives = audit_run_with_archives(tmp_path, logs_policy)
    repository = policy.backup.repository

    # As an operator runs it (the other cases run in this process, to save the interpreter's start).
    clean = trading_ops_cli("logs", "verify", str(directory), "--repository", repository)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout == b"" and b"verified, 4 entries, 3 archive(s) held, lines from" in clean.stderr

    archives["a"].unlink()
    Path(f"{archives['a']}.sha256").unlink()
    entries = [entry for entry in chain_entries(directory) if entry.get("name") != archives["a"].name]
    chain.write_chain(chain.chain_path(directory, "audit_logs"), relinked(entries))
    # Consistent without its head (which the command says it did not compare) ...
    code, out, err = logs_verify(capsys, str(directory), "--public-key", CHAIN_PUBLIC_KEY)
    assert code == 0 and out == [] and "Off-host heads not compared" in err
    # ... not against it; and a wrong key fails every entry, one line each.
    code, out, err = logs_verify(capsys, str(directory), "--repository", repository)
    assert code == 1
    assert out == [
        f"{chain.chain_path(directory, 'audit_logs')} ends at entry 2, but the off-host head records entry 3: the "
        "chain was truncated or replaced by an older copy"
    ]
    _other_private, other_public = chain.generate_signing_key()
    code, out, err = logs_verify(capsys, str(directory), "--public-key", other_public)
    assert code == 1 and len(out) == 3 and all("has no valid signature" in line for line in out)
    assert logs_verify(capsys, str(tmp_path / "nowhere"))[0] == 2


def test_a_run_for_one_host_rotates_only_the_paths_on_that_host(tmp_path, logs_policy):
    policy = logs_policy({"logs.classes.audit_logs.paths.0.host": "db2"})
    directory = tmp_path / "audit_logs"
    (directory / "audit.log").write_text("line\n" * 10)

    assert run(policy, "audit_logs").files_rotated == 0  # the default host holds no audit path now
    assert list(directory.iterdir()) == [directory / "audit.log"]
    assert run(policy, "audit_logs", host="db2").files_rotated == 1
    assert chain_entries(directory)[0]["host"] == "db2"


def test_the_repository_stores_and_reads_small_named_objects_whole(tmp_path):
    from trading_ops.backup import Repository

    repository = Repository(str(tmp_path / "repository"))
    assert repository.read_object("log-chains/default/audit_logs/x.json") is None
    repository.store_object("log-chains/default/audit_logs/x.json", b"first")
    repository.store_object("log-chains/default/audit_logs/x.json", b"second")
    assert repository.read_object("log-chains/default/audit_logs/x.json") == b"second"
    assert sorted(
        p.name for p in (tmp_path / "repository" / "objects" / "log-chains/default/audit_logs").iterdir()
    ) == ["x.json"]
    for bad in ("../escape", "a/../b", ".hidden", "a//b", "/absolute"):
        with pytest.raises(ValueError, match="not a valid object name"):
            repository.store_object(bad, b"")


def test_a_deletion_recorded_by_a_run_that_stopped_before_the_unlink_is_finished_once(tmp_path, logs_policy):
    policy = logs_policy()
    directory = tmp_path / "application_logs"
    old = make_archive(directory, archive_name("api.log", timedelta(days=40)), b"old\n", timedelta(days=40))
    (directory / "api.log").write_text("line\n")
    # The first run opens the chain (enrolling the old archive) and deletes it; rebuild the state of a run that
    # recorded the deletion and stopped before the unlink.
    book = chain.ChainBook(SIGNER, NOW)
    book.chain(directory, "application_logs").open(
        host="default", pattern="*.log", at=NOW, enrolled=[(old, chain.sha256_of(old), old.stat().st_mtime)]
    )
    book.record_deletions([(old, "older than the retention of 30 days")])
    assert chain.verify(directory, "application_logs", chain.verify_key(CHAIN_PUBLIC_KEY)) == []

    report = run(policy, "application_logs")

    assert not old.exists() and report.archives_deleted == 1 and report.chain_problems == []
    deletes = [entry for entry in chain_entries(directory, "application_logs") if entry["kind"] == "delete"]
    assert [entry["name"] for entry in deletes] == [old.name]
