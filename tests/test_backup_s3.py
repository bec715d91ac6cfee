"""The backup repository and the off-host WAL on S3: moto's server on 127.0.0.1 behind a fault-injecting proxy
(tests/fakes/s3.py), reached through s3fs and the Airflow `aws` connection `aws_backup`, as production reaches S3.

One cluster with archiving for the module (its own archive, so what it ships is only this module's WAL); each test
has its own repository prefix in one bucket.
"""

from __future__ import annotations

import faulthandler
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml

from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY, FaultyS3
from tests.support.archiving import archive_now, archiving_cluster
from tests.support.dagbag import fresh_dag
from tests.support.harness import ROOT

BUCKET = "trading-backups"
# Small parts, so the test backups are multipart uploads (S3's smallest part but the last is 5 MiB).
CHUNK = "6MB"
# Uncompressed, the base backup (about 40 MB) goes in several parts.
SETTINGS = {"backup.multipart_chunk": CHUNK, "backup.compression": "none"}
MARK = 103.5
_prefixes = itertools.count(1)
# No test here may hang CI (pytest-timeout is not installed): past this, the tracebacks are dumped and pytest exits.
TEST_TIMEOUT = 420


@pytest.fixture(autouse=True)
def _bounded():
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def s3_store():
    import s3fs

    store = FaultyS3().start()
    s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=store.endpoint).mkdir(BUCKET)
    yield store
    store.stop()


@pytest.fixture(scope="module")
def s3_cluster():
    with archiving_cluster("s3", "s3_db") as cluster_and_policy:
        yield cluster_and_policy


def _use_policy(base_policy, tmp_path, monkeypatch, **changes) -> dict:
    data = yaml.safe_load(base_policy.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / f"policy-{next(_prefixes)}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("TRADING_OPS_POLICY", str(path))
    return data


@pytest.fixture
def on_s3(s3_store, s3_cluster, tmp_path, monkeypatch, request):
    """The module's cluster as trading_db, and a policy whose repository is a fresh prefix of the bucket."""
    cluster, policy = s3_cluster
    s3_store.clear_faults()
    monkeypatch.setenv("AIRFLOW_CONN_AWS_BACKUP", s3_store.connection_json())
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", cluster.uri("s3_db"))
    url = f"s3://{BUCKET}/{request.node.name.split('[')[0][:40]}-{next(_prefixes)}"
    _use_policy(policy, tmp_path, monkeypatch, **{"backup.repository": url, **SETTINGS})
    return url


def _repository():
    from trading_ops.backup import repository_from_policy

    return repository_from_policy()


def _keys(url: str) -> list[str]:
    return sorted(path.split("/", 2)[2] for path in _repository().root.fs.find(url.removeprefix("s3://")))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trading_ops", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        timeout=300,
    )


def _write_orders(cluster, rows: int) -> None:
    with psycopg.connect(cluster.conninfo("s3_db")) as conn:
        conn.execute(
            "INSERT INTO orders (symbol, side, quantity, price, created_at) "
            "SELECT 'MSFT', 'buy', g, %s, now() FROM generate_series(1, %s) g",
            (MARK, rows),
        )


def _marked(cluster, database: str = "s3_db") -> int:
    with psycopg.connect(cluster.conninfo(database)) as conn:
        return conn.execute("SELECT count(*) FROM orders WHERE price = %s", (MARK,)).fetchone()[0]


MOMENT = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def _assert_uploaded_in_parts(s3_store, backup, role: str) -> None:
    """What the server received for the backup's file: every part of the chunk size, one completion, and after it
    the client's look at the object (the ETag check of `open_upload`); the stored ETag is that of those parts."""
    entry = backup.file_entry(role)
    key = f"{backup.path.path}/{entry['path']}"
    chunk = _repository().chunk_size
    expected_parts = -(-entry["size"] // chunk)
    assert expected_parts > 1, f"{entry['size']} bytes fit in one part of {chunk}"
    mine = [
        (index, method, path)
        for index, (method, path) in enumerate(s3_store.requests)
        if path.split("?")[0] == f"/{key}"
    ]
    parts = {
        int(query.removeprefix("partNumber="))
        for _, method, path in mine
        if method == "PUT"
        for query in path.partition("?")[2].split("&")
        if query.startswith("partNumber=")
    }
    assert parts == set(range(1, expected_parts + 1)), (parts, expected_parts)
    completions = [index for index, method, path in mine if method == "POST" and "uploadId=" in path]
    assert completions, "no CompleteMultipartUpload"
    assert any(method == "HEAD" and index > completions[-1] for index, method, _ in mine), "the ETag was not read"
    info = backup.path.fs.info(key, refresh=True)
    assert info["size"] == entry["size"] and str(info["ETag"]).strip('"').endswith(f"-{expected_parts}")


def test_full_and_wal_backups_on_s3_list_show_verify_and_pin(on_s3, s3_store, s3_cluster):
    from trading_ops.backup import jobs
    from trading_ops.backup.wal_ship import shipped_record

    cluster, _ = s3_cluster
    s3_store.requests.clear()
    backup_id = jobs.full_backup(MOMENT)
    assert jobs.verify("full", backup_id)["verified"] is True
    keys = _keys(on_s3)
    assert f"full/{backup_id}/manifest.json" in keys and f"full/{backup_id}/manifest.sha256" in keys
    assert not any(key.startswith("full/.partial-") for key in keys), "no rename on S3: written in place"
    _assert_uploaded_in_parts(s3_store, _repository().info("full", backup_id), "base")

    _write_orders(cluster, 50)
    switched = jobs.switch_wal()
    assert jobs.wal_continuity(switched)["segments_checked"] >= 1
    bundle_id = jobs.wal_bundle(MOMENT, switched)
    assert jobs.verify("incremental", bundle_id)["verified"] is True

    from trading_ops.backup.wal_ship import offhost_lag

    def lag():
        return offhost_lag(_repository(), cluster.wal_archive_dir, datetime.now(UTC), timedelta(days=30))

    assert lag() > timedelta(0), "the switched segment waits for its shipping"
    shipped = jobs.wal_ship()
    assert switched["last_segment"] in shipped["shipped"]
    assert lag() == timedelta(0), "every archived WAL file is off the host"
    record = shipped_record(_repository(), switched["last_segment"])
    delay = datetime.fromisoformat(record["shipped_at"]) - datetime.fromisoformat(record["archived_at"])
    assert timedelta(0) <= delay < timedelta(minutes=5)
    assert record["compression"] == "none" and record["raw_size"] == switched["segment_size"]
    assert jobs.wal_ship()["shipped"] == [], "a second run ships nothing: everything is there"

    listing = _cli("backups", "list")
    assert listing.returncode == 0, listing.stderr
    assert backup_id in listing.stdout and bundle_id in listing.stdout
    shown = _cli("backups", "show", backup_id)
    assert shown.returncode == 0 and f'"id": "{backup_id}"' in shown.stdout, shown.stderr
    for args in (("verify", "--quick", backup_id), ("verify", backup_id)):
        result = _cli("backups", *args)
        assert result.returncode == 0, result.stderr
    assert _cli("backups", "pin", backup_id, "--reason", "year-end audit").returncode == 0
    assert _repository().info("full", backup_id).pinned


def test_a_wal_file_shipped_with_other_content_is_an_error(on_s3, s3_cluster, tmp_path):
    from trading_ops.backup.wal_ship import WalShipConflict, ship_wal
    from trading_ops.streams import Compression

    archive = tmp_path / "archive"
    archive.mkdir()
    name = "000000010000000000000042"
    (archive / name).write_bytes(b"a" * 1000)
    repository = _repository()
    assert ship_wal(repository, archive, compression=Compression(), key=None) == [name]
    later = time.time() + 5
    os.utime(archive / name, (later, later))
    assert ship_wal(repository, archive, compression=Compression(), key=None) == [], "same content: success"
    (archive / name).write_bytes(b"b" * 1000)
    os.utime(archive / name, (later + 5, later + 5))
    with pytest.raises(WalShipConflict, match=f"WAL file {name} in .* has other content"):
        ship_wal(repository, archive, compression=Compression(), key=None)


def test_wrong_credentials_are_one_sentence_naming_the_connection(on_s3, s3_store, monkeypatch):
    from trading_ops.backup import jobs
    from trading_ops.backup.object_store import RepositoryAccessError

    monkeypatch.setenv("AIRFLOW_CONN_AWS_BACKUP", s3_store.connection_json(key_id="not-the-key"))
    with pytest.raises(RepositoryAccessError) as error:
        jobs.full_backup(MOMENT)
    message = str(error.value)
    assert "connection aws_backup" in message and "InvalidAccessKeyId" in message and "\n" not in message
    assert "testing-secret" not in message


def test_a_truncated_or_altered_object_is_caught_by_verify(on_s3):
    import hashlib

    from trading_ops.backup import BackupCorrupt, check_checksums
    from trading_ops.backup.repository import write_manifest

    repository = _repository()
    payload = os.urandom(7 * 1024 * 1024)
    with repository.staging("incremental", "2026-12-01") as staging:
        with (staging / "wal").joinpath("segment.zst").open("wb") as handle:
            handle.write(payload)
        entry = {"path": "wal/segment.zst", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        write_manifest(staging, {"id": "2026-12-01", "type": "incremental", "files": [{"role": "s", **entry}]})
    backup = repository.info("incremental", "2026-12-01")
    assert check_checksums(backup) == 1
    stored = backup.path / "wal/segment.zst"
    for damaged in (payload[:-1000], payload[:100] + b"X" + payload[101:]):
        stored.write_bytes(damaged)
        with pytest.raises(BackupCorrupt, match="does not match its manifest checksum"):
            check_checksums(backup)
        result = _cli("backups", "verify", "--quick", "2026-12-01")
        assert result.returncode != 0 and "does not match its manifest checksum" in result.stderr + result.stdout


@pytest.mark.usefixtures("airflow_db", "second_person_approves")
def test_pitr_from_s3_alone_after_the_local_wal_archive_is_lost(
    on_s3, s3_cluster, fake_trading_api, tmp_path, monkeypatch
):
    from trading_ops.backup import jobs

    cluster, policy = s3_cluster
    backup_id = jobs.full_backup(MOMENT)
    assert jobs.verify("full", backup_id)["verified"] is True
    before = _marked(cluster)
    _write_orders(cluster, 300)
    jobs.switch_wal()
    assert jobs.wal_ship()["shipped"], "the segments after the base backup are off the host"
    with psycopg.connect(cluster.conninfo("s3_db")) as conn:
        conn.execute("DROP TABLE orders CASCADE")

    # The database host's WAL archive is lost: the policy now names an empty one.
    lost = cluster.wal_archive_dir.parent / f"wal-archive-of-a-new-host-{next(_prefixes)}"
    lost.mkdir()
    _use_policy(
        policy, tmp_path, monkeypatch, **{"backup.repository": on_s3, **SETTINGS, "backup.wal_archive_dir": str(lost)}
    )
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", cluster.uri("postgres"))
    run = fresh_dag("db_restore", no_retries=True).test(
        run_conf={"dry_run": False, "confirm": "s3_db", "target_database": "s3_db", "recovery_target": "latest"}
    )
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert _marked(cluster) == before + 300, "every row committed after the base backup is back, from shipped WAL"


def test_a_killed_upload_leaves_no_backup_and_retention_removes_it_later(on_s3, s3_store):
    from trading_ops.backup.retention import RetentionRules, apply_retention, plan_retention
    from trading_ops.policy import load_policy

    s3_store.requests.clear()
    code = (
        "from datetime import datetime, UTC; from trading_ops.backup import jobs; "
        "jobs.full_backup(datetime(2026, 12, 1, 1, tzinfo=UTC))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")}, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not any("partNumber=2" in path for _, path in list(s3_store.requests)):
            assert process.poll() is None and time.monotonic() < deadline, "the backup ended before a part was sent"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    repository = _repository()
    assert _keys(on_s3) and not any(key.endswith("manifest.sha256") for key in _keys(on_s3)), "objects, no manifest"
    assert repository.ids("full") == [], "not a backup to any reader"
    listing = _cli("backups", "list")
    assert listing.returncode == 0 and "20261201T010000Z" not in listing.stdout, listing.stdout + listing.stderr
    [partial] = repository.partials("full")
    assert partial.name == "20261201T010000Z"
    rules = RetentionRules.from_policy(load_policy().backup)
    now = datetime.now(UTC)
    assert plan_retention(repository, None, rules, now + timedelta(minutes=1)).delete == [], "maybe still running"
    plan = plan_retention(repository, None, rules, now + rules.abandoned_partial_after + timedelta(minutes=1))
    assert [decision.name for decision in plan.delete] == ["full/20261201T010000Z"]
    apply_retention(plan, dry_run=False)
    assert repository.partials("full") == [] and not _keys(on_s3)


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_a_store_fault_mid_upload_publishes_nothing_and_a_retry_succeeds(on_s3, s3_store, monkeypatch, fault):
    from trading_ops.backup import jobs
    from trading_ops.backup.object_store import StoreError

    # One attempt per request in botocore; s3fs's own few retries then meet more faults than they can outlast.
    config = {"retries": {"total_max_attempts": 1, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 20}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_BACKUP", s3_store.connection_json(config_kwargs=config))
    s3_store.fail_parts(fault, times=20, fragment="partNumber=2")
    with pytest.raises(StoreError) as error:
        jobs.full_backup(MOMENT)
    message = str(error.value)
    assert message.startswith(f"The backup repository {on_s3} (connection aws_backup) failed while ")
    assert "\n" not in message
    repository = _repository()
    assert repository.ids("full") == [], "nothing published"
    assert not any(key.endswith("manifest.sha256") for key in _keys(on_s3))

    s3_store.clear_faults()
    backup_id = jobs.full_backup(MOMENT)
    assert repository.ids("full") == [backup_id]
    assert jobs.verify("full", backup_id)["verified"] is True


def test_an_upload_whose_etag_differs_from_the_bytes_sent_is_an_error(on_s3, s3_store):
    from trading_ops.backup.object_store import StoreError
    from trading_ops.backup.repository import open_upload

    repository = _repository()
    path = repository.object_path("etag-probe")
    payload = os.urandom(2 * repository.chunk_size + 1000)
    s3_store.alter_etags("/objects/etag-probe")
    with pytest.raises(StoreError, match="does not match what was sent"), open_upload(path) as handle:
        handle.write(payload)
    s3_store.clear_faults()
    with open_upload(path) as handle:
        handle.write(payload)
    assert path.read_bytes() == payload


def _segment_days(url: str, kind: str) -> list[int]:
    """The simulated days of the published backups (`kind` full or incremental) or shipped WAL records (`wal`),
    from one listing. A deleted backup leaves no object at all."""
    from tests.support.retention import DAY0, segment_day
    from trading_ops.backup.repository import id_time

    keys = [key.split("/", 1)[1] for key in _keys(url) if key.startswith(f"{kind}/")]
    if kind == "wal":
        return sorted(segment_day(key) for key in keys if key.endswith(".json"))
    published = {key.split("/")[0] for key in keys if key.endswith("/manifest.sha256")}
    assert {key.split("/")[0] for key in keys} == published, "objects of an unpublished or half-deleted backup"
    return sorted((id_time(backup_id).date() - DAY0.date()).days for backup_id in published)


def test_retention_on_s3_over_six_simulated_weeks(on_s3, s3_store, tmp_path):
    """Backups and shipped WAL with simulated times (manifests written, objects backdated), retention at three
    moments: the 4-week, 7-day and 30-day rules, pins, the newest verified full, the newest drilled full, and the
    WAL a kept base backup needs, in the archive and in the repository's wal/ alike."""
    from tests.support.retention import DAY0, add_backup, archive_segment, archived_at, wal_days
    from trading_ops.backup.repository import full_backup_id, incremental_backup_id
    from trading_ops.backup.retention import RetentionRules, apply_retention, plan_retention
    from trading_ops.backup.wal_ship import ship_wal
    from trading_ops.policy import load_policy
    from trading_ops.streams import Compression

    repository = _repository()
    rules = RetentionRules.from_policy(load_policy().backup)
    archive = tmp_path / "archive"
    archive.mkdir()
    segment_days = [0, 6, 7, 12, 13, 20, 35, 41]
    names = [archive_segment(archive, day) for day in segment_days]
    assert ship_wal(repository, archive, compression=Compression(), key=None) == names
    wal_prefix = f"{repository.root.path}/wal/"
    for day, name in zip(segment_days, names, strict=True):
        # Shipped when archived: the shipped copy's age is its object's own timestamp.
        assert s3_store.set_modified(BUCKET, wal_prefix.split("/", 1)[1] + name, archived_at(day)) == 2
    # The first full verified, the next never verified, the later ones failed verification.
    for day, verified in ((0, True), (7, None), (14, False), (21, False), (28, False), (35, False)):
        add_backup(repository, "full", day, verified=verified)
    for day in (3, 20, 34, 35, 41):
        add_backup(repository, "incremental", day)
    repository.pin(repository.info("incremental", incremental_backup_id((DAY0 + timedelta(days=3)).date())), "audit")
    drilled = full_backup_id(DAY0 + timedelta(days=14))

    def retention(day: int, last_drilled: str | None):
        now = DAY0 + timedelta(days=day, hours=1)
        return apply_retention(
            plan_retention(_repository(), archive, rules, now, last_drilled=last_drilled), dry_run=False
        )

    # Day 41, 02:00. Day 7's full is 34 days old; day 0's is older but the newest verified one, so every segment
    # from its start stays, even those older than 30 days (days 0, 6 and 7).
    plan = retention(41, drilled)
    assert _segment_days(on_s3, "full") == [0, 14, 21, 28, 35]
    # Day 34's incremental is 7 days and 55 minutes old; day 3's is pinned.
    assert _segment_days(on_s3, "incremental") == [3, 35, 41]
    assert _segment_days(on_s3, "wal") == segment_days and wal_days(archive) == segment_days
    needed = {d.name for d in plan.keep if d.kind == "shipped wal" and d.reason == "needed by a retained base backup"}
    assert needed == set(names[:3])

    # Day 42: a verified full. Day 0's full goes; day 14's (28 days 55 minutes old) stays for its passed drill.
    # WAL older than 30 days goes now (day 12's segment is 30 days 1.5 hours old): no kept base backup starts
    # before day 14.
    newest = archive_segment(archive, 42)
    assert ship_wal(repository, archive, compression=Compression(), key=None) == [newest]
    s3_store.set_modified(BUCKET, wal_prefix.split("/", 1)[1] + newest, archived_at(42))
    add_backup(repository, "full", 42)
    retention(42, drilled)
    assert _segment_days(on_s3, "full") == [14, 21, 28, 35, 42]
    assert _segment_days(on_s3, "incremental") == [3, 41]
    assert _segment_days(on_s3, "wal") == [13, 20, 35, 41, 42] and wal_days(archive) == [13, 20, 35, 41, 42]
    assert not any(key.startswith("wal/" + name) for key in _keys(on_s3) for name in names[:4]), "file and record"

    # Without the drill, day 14's full is only old.
    retention(42, None)
    assert _segment_days(on_s3, "full") == [21, 28, 35, 42]
    assert _segment_days(on_s3, "wal") == [13, 20, 35, 41, 42]


def test_wal_shipped_encrypted_is_age_on_s3_and_reads_back_identically(on_s3, s3_cluster, tmp_path, monkeypatch):
    import hashlib
    import json

    from trading_ops.backup import jobs
    from trading_ops.backup.wal_names import SEGMENT_RE
    from trading_ops.backup.wal_ship import shipped_record, wal_dir
    from trading_ops.backup.wal_sources import chain, collect, localize, write_identity, write_index
    from trading_ops.streams import EncryptionKey
    from trading_ops.wal_fetch import DAMAGED, INDEX_ENV

    cluster, policy = s3_cluster
    _use_policy(
        policy,
        tmp_path,
        monkeypatch,
        **{"backup.repository": on_s3, **SETTINGS, "backup.compression": "zstd", "backup.encryption.enabled": True},
    )
    secret = EncryptionKey.generate()
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_ENCRYPTION_KEY", json.dumps({"conn_type": "generic", "password": secret}))
    key = EncryptionKey.from_connection("backup_encryption_key")
    marker = f"plain-wal-marker-{os.urandom(8).hex()}"
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS wal_marker (t text)")
        conn.execute("INSERT INTO wal_marker VALUES (%s)", (marker,))
    switched = jobs.switch_wal()
    name = switched["last_segment"]
    plain = (cluster.wal_archive_dir / name).read_bytes()
    assert marker.encode() in plain, "the segment holds the marker in plain text"

    shipped = jobs.wal_ship()["shipped"]
    assert name in shipped
    repository = _repository()
    wal_keys = [key for key in _keys(on_s3) if key.startswith("wal/")]
    assert sorted(wal_keys) == sorted([f"wal/{n}.zst.age" for n in shipped] + [f"wal/{n}.json" for n in shipped])
    stored = (wal_dir(repository) / f"{name}.zst.age").read_bytes()
    assert stored.startswith(b"age-encryption.org/v1") and marker.encode() not in stored
    record = shipped_record(repository, name)
    assert record["encryption"]["key_id"] == key.key_id and record["compression"] == "zstd"
    assert record["raw_sha256"] == hashlib.sha256(plain).hexdigest()

    # The host and its archive are lost: the repository's wal/ alone holds the chain the archive held.
    files = collect(None, repository, switched["segment_size"])
    assert {entry["source"] for entry in files.values()} == {"repository"} and set(files) == set(shipped)
    from_archive = collect(cluster.wal_archive_dir, repository, switched["segment_size"])
    oldest = min((n for n in shipped if SEGMENT_RE.match(n)), key=lambda n: (n[8:], n[:8]))
    alone = chain(files, oldest, switched["segment_size"], str(key.identity))
    assert alone == chain(from_archive, oldest, switched["segment_size"], str(key.identity))
    assert not alone.missing and name in alone.segments

    instance = tmp_path / "instance"
    files = localize(files, alone.segments, instance)
    identity = tmp_path / "identity"
    write_identity(identity, str(key.identity))
    index = tmp_path / "index.json"
    write_index(index, files, log=tmp_path / "fetch.log", identity_file=identity)

    def fetch(destination):
        return subprocess.run(
            [sys.executable, "-m", "trading_ops", "wal", "fetch", name, str(destination)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "plugins"), INDEX_ENV: str(index)},
            timeout=120,
        )

    fetched = fetch(tmp_path / "fetched")
    assert fetched.returncode == 0, fetched.stderr
    assert hashlib.sha256((tmp_path / "fetched").read_bytes()).hexdigest() == record["raw_sha256"]
    write_identity(identity, str(EncryptionKey.from_secret(EncryptionKey.generate(), "backup_encryption_key").identity))
    refused = fetch(tmp_path / "refused")
    assert refused.returncode == DAMAGED and "cannot be decrypted" in refused.stderr
    assert not (tmp_path / "refused").exists()


@pytest.mark.usefixtures("pg_cluster")  # its ops state database holds the rule state
def test_wal_not_off_the_host_within_its_limit_alerts_and_resolves_once_shipped(on_s3, s3_cluster, alert_fakes):
    """system_health's wal_offhost_stale reads the archive and the repository itself, so a paused or failing
    db_wal_ship is noticed. Judged at moments set from the segment's own archive time: no wall clock decides."""
    from tests.support.monitoring import healthy_metrics
    from trading_ops.backup import jobs
    from trading_ops.monitoring import collect, state
    from trading_ops.policy import OFFHOST_LAG_METRIC, load_policy

    cluster, _ = s3_cluster
    slack, _ = alert_fakes
    policy = load_policy()
    within = policy.backup.wal_ship_within
    jobs.wal_ship()  # what the module archived so far: this repository then lacks only the next segment
    name = archive_now(cluster)
    archived_at = datetime.fromtimestamp((cluster.wal_archive_dir / name).stat().st_mtime, UTC)

    def evaluate(at):
        metrics = {**healthy_metrics(policy), **collect.collect_freshness_metrics(policy, at)}
        result = state.check_system_health(policy, metrics, at, "http://127.0.0.1:8080/dags/system_health/runs/x")
        return metrics[OFFHOST_LAG_METRIC], result

    lag, result = evaluate(archived_at + within - timedelta(seconds=1))
    assert lag == pytest.approx((within - timedelta(seconds=1)).total_seconds(), abs=0.01)
    assert "wal_offhost_stale" not in result["breaching"]
    lag, result = evaluate(archived_at + within + timedelta(seconds=1))
    assert lag > within.total_seconds() and result["fired"].count("wal_offhost_stale") == 1

    assert name in jobs.wal_ship()["shipped"]
    lag, result = evaluate(archived_at + within + timedelta(seconds=2))
    assert lag == 0 and result["resolved"] == ["wal_offhost_stale"]

    sent = [m["text"].split("\n")[0] for m in slack.messages() if "wal_offhost_stale" in m["text"]]
    assert sent == [
        ":warning: *P2 major* (major feature failure) · wal_offhost_stale: wal_offhost_lag_seconds > 300 for 0s",
        ":white_check_mark: *RESOLVED P2 major* · wal_offhost_stale: wal_offhost_lag_seconds > 300 for 0s",
    ]
