"""docker-compose.yaml parses, runs the pinned Airflow, and mounts this repository's folders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_ENV = {"TRADING_DB_PASSWORD": "pw", "AIRFLOW_JWT_SECRET": "jwt", "AIRFLOW_SECRET_KEY": "key"}
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
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


def _mounts(service: dict) -> dict[str, str]:
    """target -> source, whether the compose version prints long or short volume syntax."""
    mounts = {}
    for volume in service["volumes"]:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source")
        else:
            source, target, *_ = volume.split(":")
            mounts[target] = source
    return mounts


def test_compose_has_airflow_celery_and_trading_db(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"redis", "airflow-metadata", "trading-db", "airflow-init"} <= set(services)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW_CONN_TRADING_DB"].endswith("@trading-db:5432/trading_db")
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
    assert "TRADING_DB_PASSWORD" in result.stderr or "AIRFLOW_JWT_SECRET" in result.stderr


def test_trading_db_archives_through_the_shipped_script(compose):
    trading_db = compose["services"]["trading-db"]
    archive_command = next(arg for arg in trading_db["command"] if arg.startswith("archive_command="))
    assert archive_command == "archive_command=sh /opt/trading-ops/archive_wal.sh /var/lib/postgresql/wal-archive %p %f"
    script = ROOT / "plugins" / "trading_ops" / "backup" / "archive_wal.sh"
    assert _mounts(trading_db)["/opt/trading-ops/archive_wal.sh"] == str(script)
    worker = compose["services"]["airflow-worker"]
    assert _mounts(worker)["/var/lib/postgresql/wal-archive"] == "wal-archive"
    assert "999" in [str(group) for group in worker["group_add"]], "workers read the archive as postgres' group"
