"""Test harness: Airflow pointed at a temporary home, a real PostgreSQL 15 cluster, and a test policy.

`tests.support.harness` sets Airflow's environment and is imported first, before anything imports airflow.
"""

from __future__ import annotations

import itertools
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.support.harness import DEMO_END, PG_BASE, RUN_DIR, TEMPLATE_DB, TEST_POLICY
from trading_ops.dev.localpg import LocalCluster


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL 15 on 127.0.0.1 with WAL archiving, amcheck and the manual's schema in trading_db."""
    import psycopg

    from trading_ops.dev.demo_data import create_schema, load_demo_data

    cluster = LocalCluster(PG_BASE)
    cluster.init()
    cluster.start()
    try:
        cluster.create_database(TEMPLATE_DB)
        with psycopg.connect(cluster.conninfo(TEMPLATE_DB)) as conn:
            create_schema(conn)
            load_demo_data(conn, end=DEMO_END, step=timedelta(hours=6), order_step=timedelta(days=1))
        cluster.create_database("trading_db", template=TEMPLATE_DB)
        os.environ["AIRFLOW_CONN_TRADING_DB"] = cluster.uri("trading_db")
        yield cluster
    finally:
        cluster.stop(mode="immediate")


_db_names = itertools.count(1)


@pytest.fixture
def fresh_db(pg_cluster, monkeypatch):
    """A new database copied from the demo template; the `trading_db` connection points at it for the test."""
    name = f"test_db_{os.getpid()}_{next(_db_names)}"
    pg_cluster.create_database(name, template=TEMPLATE_DB)
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", pg_cluster.uri(name))
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_conn(pg_cluster, fresh_db):
    import psycopg

    with psycopg.connect(pg_cluster.conninfo(fresh_db)) as conn:
        yield conn


@pytest.fixture
def make_policy(tmp_path, monkeypatch):
    """Write a copy of the test policy with `changes` applied ({"backup.compression": "gzip"}) and use it."""

    def _make(changes: dict) -> Path:
        data = yaml.safe_load(TEST_POLICY.read_text())
        for dotted, value in changes.items():
            *parents, last = dotted.split(".")
            node = data
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[last] = value
        path = tmp_path / f"policy_{len(list(tmp_path.glob('policy_*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("TRADING_OPS_POLICY", str(path))
        return path

    return _make


@pytest.fixture(scope="session")
def dagbag():
    """The project's DAGs, parsed once for the session."""
    from tests.support.dagbag import project_dagbag

    return project_dagbag()


@pytest.fixture(scope="session")
def airflow_db():
    """The SQLite metadata DB that dag.test() needs, created once per session."""
    from airflow.utils import db

    db.initdb()


# --- Alert destinations and metric sources: fakes on 127.0.0.1 speaking the real wire protocols -----------------


@pytest.fixture(scope="session")
def slack_fake():
    from tests.fakes.slack import FakeSlack

    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pagerduty_fake():
    from tests.fakes.pagerduty import FakePagerDuty

    tls_dir = RUN_DIR / "pagerduty-tls"
    tls_dir.mkdir(exist_ok=True)
    server = FakePagerDuty(tls_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus_fake():
    from tests.fakes.prometheus import FakePrometheus

    server = FakePrometheus().start()
    yield server
    server.stop()


@pytest.fixture
def alert_fakes(slack_fake, pagerduty_fake, monkeypatch):
    """The `slack_alerts` and `pagerduty_events` connections point at fresh fakes for this test."""
    slack_fake.reset()
    pagerduty_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack_fake.connection_json())
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_EVENTS", pagerduty_fake.connection_json())
    return slack_fake, pagerduty_fake


@pytest.fixture
def fake_trading_api(tmp_path, monkeypatch):
    """The trading-api Deployment (3 ready pods) behind a fake Kubernetes API, wired as `kubernetes_default`."""
    from tests.fakes.kubernetes_workload import TradingApiFake

    with TradingApiFake() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="trading")
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", fake.connection_json(kubeconfig, "trading"))
        yield fake


# --- Capacity review: the caches' Redis servers and the Kubernetes API with the HPA and Deployment --------------


@pytest.fixture(scope="session")
def redis_caches():
    """One real redis-server per cache of the test policy on free 127.0.0.1 ports; the caches' `redis_conn_id`
    connections point at them for the session."""
    from tests.support.harness import TEST_POLICY
    from trading_ops.dev.localredis import LocalRedis
    from trading_ops.policy import load_policy

    servers = {}
    try:
        for name, entry in load_policy(TEST_POLICY).cache.items():
            servers[name] = LocalRedis(RUN_DIR / "redis" / name).start()
            os.environ[f"AIRFLOW_CONN_{entry.redis_conn_id.upper()}"] = servers[name].connection_json()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# --- The ops state database (trading_ops.opsstate): apart from trading_db, as in production ----------------------

_ops_state_names = itertools.count(1)


@pytest.fixture(autouse=True)
def ops_state_db(request, monkeypatch):
    """Wherever a test has the PostgreSQL cluster, an empty ops state database of its own beside trading_db, as the
    `ops_state` connection (None for a test without the cluster)."""
    if "pg_cluster" not in request.fixturenames:
        yield None
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"ops_state_{os.getpid()}_{next(_ops_state_names)}"
    cluster.create_database(name)
    monkeypatch.setenv("AIRFLOW_CONN_OPS_STATE", cluster.uri(name))
    yield name
    cluster.drop_database(name)


@pytest.fixture
def ops_conn(pg_cluster, ops_state_db):
    """A connection to the test's ops state database."""
    import psycopg

    with psycopg.connect(pg_cluster.conninfo(ops_state_db)) as conn:
        yield conn


@pytest.fixture(scope="session")
def heartbeat_fake():
    from tests.fakes.heartbeat import FakeHeartbeat

    server = FakeHeartbeat().start()
    yield server
    server.stop()


@pytest.fixture
def heartbeat(heartbeat_fake, monkeypatch):
    """The `heartbeat` connection (system_health's dead man's switch) on a fresh fake for this test."""
    heartbeat_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_HEARTBEAT", heartbeat_fake.connection_json())
    return heartbeat_fake


@pytest.fixture
def second_person_approves():
    """Approves the live db_restore run of the test as `approver` (a second person, in the local policy's
    restore.approval.approvers) as soon as it asks, through the same model calls as the REST API; yields the
    Responder, whose `request` is what the approval task showed (None if it never asked)."""
    from tests.support.hitl import Responder

    with Responder("db_restore", "approve_live_restore", answer="Approve", user="approver") as responder:
        yield responder
