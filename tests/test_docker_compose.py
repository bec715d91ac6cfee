"""docker-compose.yaml parses, runs the pinned Airflow, mounts this repository's folders and what the checks
read, and gives the DAGs every connection the policy names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
import yaml

from tests.support.harness import ROOT
from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy

# A password full of what a URI would take for its own syntax.
DB_PASSWORD = "p/w@x:y#z?%+ &"
COMPOSE_ENV = {
    "TRADING_DB_PASSWORD": DB_PASSWORD,
    "OPS_STATE_PASSWORD": "ops",
    "AIRFLOW_JWT_SECRET": "jwt",
    "AIRFLOW_SECRET_KEY": "key",
}
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-trading-db",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail("docker-compose is missing: scripts/bootstrap.sh installs Debian's docker-compose package")
    result = subprocess.run(
        [executable, "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **COMPOSE_ENV},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _mounts(service: dict, *, read_only: bool = False) -> dict[str, str]:
    """target -> source (only the read-only mounts with `read_only`), whether the compose version prints long or
    short volume syntax."""
    mounts = {}
    for volume in service["volumes"]:
        if isinstance(volume, dict):
            if volume.get("read_only") or not read_only:
                mounts[volume["target"]] = volume.get("source")
        else:
            source, target, *mode = volume.split(":")
            if "ro" in mode or not read_only:
                mounts[target] = source
    return mounts


def test_compose_has_airflow_celery_and_trading_db(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"redis", "airflow-metadata", "trading-db", "airflow-init"} <= set(services)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        mounts = _mounts(services[name])
        for folder in ("dags", "plugins", "include"):
            assert mounts[f"/opt/airflow/{folder}"] == str(ROOT / folder)
        assert "/var/backups/trading-ops" in mounts


def test_compose_pins_the_airflow_version(compose):
    assert "FROM apache/airflow:3.3.2-" in (ROOT / "Dockerfile").read_text()
    assert compose["services"]["airflow-scheduler"]["image"] == "trading-ops-airflow:3.3.2"
    assert "apache-airflow==3.3.2" in (ROOT / "requirements.txt").read_text().splitlines()


def test_trading_db_archives_wal_to_a_volume(compose):
    trading_db = compose["services"]["trading-db"]
    command = " ".join(trading_db["command"])
    assert "wal_level=replica" in command and "archive_mode=on" in command
    assert _mounts(trading_db)["/var/lib/postgresql/wal-archive"] == "wal-archive"
    assert "wal-archive" in compose["volumes"]
    assert "/var/lib/postgresql/wal-archive" in command


def test_secrets_are_required_not_defaulted():
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert any(name in result.stderr for name in ("TRADING_DB_PASSWORD", "OPS_STATE_PASSWORD", "AIRFLOW_JWT_SECRET"))


def test_trading_db_archives_through_the_shipped_script(compose):
    trading_db = compose["services"]["trading-db"]
    archive_command = next(arg for arg in trading_db["command"] if arg.startswith("archive_command="))
    assert archive_command == "archive_command=sh /opt/trading-ops/archive_wal.sh /var/lib/postgresql/wal-archive %p %f"
    script = ROOT / "plugins" / "trading_ops" / "backup" / "archive_wal.sh"
    assert _mounts(trading_db)["/opt/trading-ops/archive_wal.sh"] == str(script)
    worker = compose["services"]["airflow-worker"]
    assert _mounts(worker)["/var/lib/postgresql/wal-archive"] == "wal-archive"
    assert "999" in [str(group) for group in worker["group_add"]], "workers read the archive as postgres' group"


def test_the_database_password_reaches_airflow_whatever_its_characters(compose):
    from airflow.sdk import Connection

    env = compose["services"]["airflow-worker"]["environment"]
    connection = Connection.from_json(env["AIRFLOW_CONN_TRADING_DB"], conn_id="trading_db")
    assert (connection.conn_type, connection.host, connection.port) == ("postgres", "trading-db", 5432)
    assert (connection.schema, connection.login, connection.password) == ("trading_db", "trading", DB_PASSWORD)
    assert compose["services"]["trading-db"]["environment"]["POSTGRES_PASSWORD"] == DB_PASSWORD


def test_the_workers_read_the_logs_the_security_checks_review(compose):
    auth_logs = load_policy(DEFAULT_POLICY_PATH).security.auth_logs
    trading_db = compose["services"]["trading-db"]
    settings = dict(arg.split("=", 1) for arg in trading_db["command"] if "=" in arg)
    postgres_log = PurePosixPath(auth_logs.postgres_paths[0])
    assert settings["logging_collector"] == "on" and settings["log_connections"] == "on"
    assert (settings["log_directory"], settings["log_filename"]) == (str(postgres_log.parent), postgres_log.name)
    assert _mounts(trading_db)[str(postgres_log.parent)] == "postgres-logs"
    for name in AIRFLOW_SERVICES:
        mounts = _mounts(compose["services"][name], read_only=True)
        assert mounts[str(postgres_log.parent)] == "postgres-logs", name
        assert mounts[auth_logs.ssh_paths[0]] == auth_logs.ssh_paths[0], f"{name}: the host's sshd/sudo log"


def _conn_ids(node) -> set[str]:
    """Every connection id the policy names (keys ending in conn_id, and the per-channel Slack connections)."""
    if isinstance(node, dict):
        found = {value for key, value in node.items() if str(key).endswith("conn_id") and isinstance(value, str)}
        found |= set(node.get("slack_channel_conn_ids", {}).values())
        return found.union(*(_conn_ids(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_conn_ids(value) for value in node))
    return set()


def test_every_connection_the_policy_names_is_listed(compose):
    needed = _conn_ids(load_policy(DEFAULT_POLICY_PATH).model_dump(by_alias=True)) | {"prometheus"}
    assert {"trading_db", "kubernetes_default", "slack_alerts", "pagerduty_events", "osv_api"} <= needed
    header = (ROOT / "docker-compose.yaml").read_text().split("\n\n")[0]
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert {f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id in needed} <= set(env), name
    for conn_id in needed:
        assert re.search(rf"^#\s+(\S+, )*{conn_id}\b", header, re.MULTILINE), f"the header explains {conn_id}"


def test_the_header_names_only_variables_the_file_uses():
    text = (ROOT / "docker-compose.yaml").read_text()
    header, body = text.split("\n\n", 1)
    mentioned = set(re.findall(r"\b([A-Z][A-Z_]+)=", header))
    assert mentioned == {"TRADING_DB_PASSWORD", "OPS_STATE_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_SECRET_KEY"}
    assert all(f"${{{name}" in body for name in mentioned)
    assert "AIRFLOW_ADMIN_PASSWORD" not in text


def _worker_queues(compose: dict) -> dict[str, tuple[list[str], str | None]]:
    """Celery worker service -> (the queues it serves, the host it says it is)."""
    workers = {}
    for name, service in compose["services"].items():
        command = service.get("command")
        argv = command.split() if isinstance(command, str) else list(command or [])
        if argv[:2] == ["celery", "worker"]:
            queues = argv[argv.index("--queues") + 1].split(",") if "--queues" in argv else ["default"]
            workers[name] = (queues, service["environment"].get("TRADING_OPS_HOST"))
    return workers


def test_one_worker_per_log_host_serves_that_hosts_queue(compose):
    from trading_ops.logs.hosts import queue_of

    workers = _worker_queues(compose)
    hosts = compose["services"]["airflow-scheduler"]["environment"]["TRADING_OPS_LOG_HOSTS"].split(",")
    assert len(hosts) >= 2, "the stack shows more than one host"
    for host in hosts:
        serving = [
            name for name, (queues, _host) in workers.items() if queue_of(host).get("queue", "default") in queues
        ]
        assert len(serving) == 1, f"exactly one worker serves host {host}'s queue: {serving}"
        assert workers[serving[0]][1] == host, f"{serving[0]} says it is host {host} (TRADING_OPS_HOST)"
    # Every host the shipped policy puts a log path on has a task (and so a worker).
    policy_hosts = {
        path.host for log_class in load_policy(DEFAULT_POLICY_PATH).logs.classes.values() for path in log_class.paths
    }
    assert policy_hosts <= set(hosts)
    # The database host's worker has the database host's logs.
    assert "system-logs" in _mounts(compose["services"]["airflow-worker-trading-db"]).values()
