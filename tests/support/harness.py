"""The test session's environment: a temporary Airflow home, the test policy, and where things are.

Airflow reads its configuration when first imported, so importing this sets the environment before anything
imports airflow; tests/conftest.py imports it first. Tests import the paths and constants from here.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(tempfile.mkdtemp(prefix="trading-ops-test-"))
# The postgres OS user runs the test cluster and must be able to enter this directory.
RUN_DIR.chmod(0o755)
AIRFLOW_HOME = RUN_DIR / "airflow-home"
AIRFLOW_HOME.mkdir()

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
)

# Airflow replaces the root logging handlers when it configures logging on first import; doing it now, before
# pytest installs its capture handlers for each test, keeps `caplog` working in tests that use Airflow hooks.
import airflow.providers.postgres.hooks.postgres  # noqa: E402, F401

from trading_ops.dev.local_policy import write_local_policy  # noqa: E402

PG_BASE = RUN_DIR / "pg"
POLICY_ROOT = RUN_DIR / "root"
POLICY_ROOT.mkdir()
TEST_POLICY = write_local_policy(
    RUN_DIR / "ops_policy.yaml",
    POLICY_ROOT,
    wal_archive_dir=PG_BASE / "wal-archive",
    airflow_url="http://127.0.0.1:8080",
)
os.environ["TRADING_OPS_POLICY"] = str(TEST_POLICY)

# Demo data ends here, so tests that archive "older than 3 months" know exactly which rows qualify.
DEMO_END = datetime(2026, 11, 1, tzinfo=UTC)
TEMPLATE_DB = "trading_db_template"
