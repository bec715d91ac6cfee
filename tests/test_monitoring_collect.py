"""Metrics from the real host, the real test PostgreSQL and a Prometheus query API (`monitoring.collect`)."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta

import psutil
import psycopg
import pytest

from tests.support.monitoring import T0, minutes
from trading_ops.monitoring import collect
from trading_ops.policy import HOST_METRICS, POSTGRES_METRICS, load_policy


def test_psutil_host_metrics_come_from_this_host_and_say_so(tmp_path):
    missing = tmp_path / "not-created-yet" / "backups"
    metrics = collect.collect_psutil_host_metrics({"data": str(tmp_path), "backup": str(missing)})

    assert set(metrics) == {
        "cpu_usage_percent",
        "memory_usage_percent",
        "disk_usage_percent.data",
        "disk_usage_percent.backup",
    }
    this_host = f'instance="{socket.gethostname()}",source="psutil"'
    assert all(list(series) == [this_host] for series in metrics.values()), "one series, labelled as this worker's"
    assert 0 <= metrics["cpu_usage_percent"][this_host] <= 100
    assert metrics["memory_usage_percent"][this_host] == pytest.approx(psutil.virtual_memory().percent, abs=5)
    data = metrics["disk_usage_percent.data"][this_host]
    assert data == pytest.approx(psutil.disk_usage(str(tmp_path)).percent, abs=1)
    # A folder that does not exist yet is measured on the volume that will hold it.
    assert metrics["disk_usage_percent.backup"][this_host] == pytest.approx(data, abs=1)


def test_postgres_metrics_come_from_the_real_server(pg_cluster, fresh_db):
    baseline = collect.collect_postgres_metrics("trading_db")
    with psycopg.connect(pg_cluster.conninfo(fresh_db)) as busy:
        busy.execute("SELECT count(*) FROM market_data")  # opens a transaction that stays open
        time.sleep(1.2)
        during = collect.collect_postgres_metrics("trading_db")
    with psycopg.connect(pg_cluster.conninfo(fresh_db)) as conn:
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        failed_count = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]

    assert during["pg_up"] == baseline["pg_up"] == 1
    assert during["pg_connections"] == baseline["pg_connections"] + 1
    assert during["pg_max_connections"] == max_connections
    assert during["pg_connection_usage_percent"] == pytest.approx(100 * during["pg_connections"] / max_connections)
    assert during["pg_longest_transaction_seconds"] >= 1.2 > baseline["pg_longest_transaction_seconds"]
    assert during["pg_database_size_bytes"] == size
    assert during["pg_wal_archive_failed_count"] == failed_count
    assert during["pg_wal_archive_failing"] == 0, "the harness archives WAL successfully"
    # The test cluster is a primary without standbys: there is no replication lag to measure.
    assert (during["pg_replicas"], during["pg_replication_lag_seconds"]) == (0, None)


def test_replication_lag_does_not_grow_while_the_primary_is_idle(pg_cluster, monkeypatch):
    """A standby that has replayed everything has no lag, however long ago the primary's last commit was."""
    import subprocess

    from tests.support.harness import RUN_DIR
    from trading_ops.dev.localpg import LocalCluster
    from trading_ops.pgserver import as_server_user as _as_server_user
    from trading_ops.pgserver import give_to_server_user as _give_to_server_user
    from trading_ops.pgtools import server_bindir

    home = RUN_DIR / "replication"
    home.mkdir()
    home.chmod(0o755)  # the postgres OS user runs both clusters
    primary = LocalCluster(home / "primary")
    standby = LocalCluster(home / "standby", password=primary.password)  # a copy of the primary
    primary.init()
    primary.start()
    try:
        standby.base_dir.mkdir(parents=True)
        _give_to_server_user(standby.base_dir)
        subprocess.run(
            _as_server_user(
                [str(server_bindir() / "pg_basebackup"), "-D", str(standby.data_dir), "-R", "-h"]
                + [str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres"]
            ),
            check=True,
            capture_output=True,
        )
        for directory in (standby.socket_dir, standby.wal_archive_dir):
            directory.mkdir()
            _give_to_server_user(directory)
        with open(standby.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in standby.settings().items())
        standby.start()
        with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE replicated (id integer)")  # one commit for the standby to replay
        with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
            deadline = time.monotonic() + 20
            while not conn.execute(
                "SELECT pg_last_xact_replay_timestamp() IS NOT NULL "
                "AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
            ).fetchone()[0]:
                assert time.monotonic() < deadline, "the standby did not catch up"
                time.sleep(0.05)
        time.sleep(2)  # the primary stays idle

        monkeypatch.setenv("AIRFLOW_CONN_STANDBY", standby.uri())
        monkeypatch.setenv("AIRFLOW_CONN_PRIMARY", primary.uri())
        on_standby = collect.collect_postgres_metrics("standby")
        on_primary = collect.collect_postgres_metrics("primary")
    finally:
        standby.stop(mode="immediate")
        primary.stop(mode="immediate")

    assert on_standby["pg_replication_lag_seconds"] == 0
    assert on_primary["pg_replicas"] == 1 and on_primary["pg_replication_lag_seconds"] < 1


def test_an_unreachable_postgres_is_measured_as_down(pg_cluster, monkeypatch, caplog):
    from trading_ops.dev.localpg import free_port

    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")
    assert collect.collect_postgres_metrics("trading_db") == {"pg_up": 0.0}
    assert "PostgreSQL (trading_db) is unreachable" in caplog.text


def test_collectors_measure_exactly_the_metrics_rules_may_watch(tmp_path, fresh_db):
    host = collect.collect_psutil_host_metrics({"data": str(tmp_path)})
    postgres = collect.collect_postgres_metrics("trading_db")
    informational = {"pg_wal_archive_last_failed_wal", "pg_wal_archive_last_failed_time"}
    assert set(host) == {*HOST_METRICS, "disk_usage_percent.data"}
    assert set(postgres) - informational == set(POSTGRES_METRICS)


@pytest.fixture
def prometheus(prometheus_fake, monkeypatch):
    """The Prometheus fake behind the `prometheus` HTTP connection, with basic-auth credentials."""
    prometheus_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json("grafana-reader", "s3cret"))
    return prometheus_fake


def test_application_metrics_are_queried_at_the_runs_time(prometheus):
    prometheus_fake = prometheus
    policy = load_policy()
    queries = policy.monitoring.sources.prometheus_queries
    prometheus_fake.values.update(
        {
            queries["api_latency_p95_ms"]: 420.0,
            queries["error_rate_percent"]: 2.5,
            queries["request_rate_per_second"]: 850,
        }
    )

    metrics = collect.collect_application_metrics("prometheus", queries, minutes(5), timedelta(seconds=5))

    assert metrics == {
        "prometheus_up": 1.0,
        "api_latency_p95_ms": 420.0,
        "api_latency_p99_ms": None,  # no data
        "error_rate_percent": 2.5,
        "request_rate_per_second": 850.0,
    }
    assert [(r.method, r.path) for r in prometheus_fake.requests] == [("GET", "/api/v1/query")] * 4
    assert [r.query["query"][0] for r in prometheus_fake.requests] == list(queries.values())
    assert prometheus_fake.queried_times() == [minutes(5).timestamp()] * 4
    # The connection's credentials go along (Basic grafana-reader:s3cret).
    assert {r.headers["Authorization"] for r in prometheus_fake.requests} == {"Basic Z3JhZmFuYS1yZWFkZXI6czNjcmV0"}


def test_a_prometheus_that_refuses_or_is_down_is_measured_as_down(prometheus, caplog):
    queries = {"error_rate_percent": "sum(rate(x[5m]))"}
    prometheus.error = (503, "unavailable", "TSDB not ready")
    down = collect.collect_application_metrics("prometheus", queries, T0, timedelta(seconds=5))
    assert down == {
        "prometheus_up": 0.0,
        "prometheus_error": (
            f"http://127.0.0.1:{prometheus.port}/api/v1/query refused the error_rate_percent query (HTTP 503): "
            "unavailable: TSDB not ready."
        ),
    }

    from trading_ops.dev.localpg import free_port

    closed = {"conn_type": "http", "host": "127.0.0.1", "port": free_port(), "schema": "http"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_PROMETHEUS", json.dumps(closed))
        unreachable = collect.collect_application_metrics("prometheus", queries, T0, timedelta(seconds=5))
    assert unreachable["prometheus_up"] == 0.0
    assert "did not answer the error_rate_percent query" in unreachable["prometheus_error"]

    missing = collect.collect_application_metrics("no_such_prometheus", queries, T0, timedelta(seconds=5))
    assert missing["prometheus_error"].startswith("the Prometheus connection 'no_such_prometheus' cannot be used")
    assert "Prometheus (no_such_prometheus) is unavailable" in caplog.text


def test_node_exporter_host_metrics_come_one_series_per_instance(prometheus, make_policy):
    make_policy({"monitoring.sources.host_metrics": "prometheus"})
    sources = load_policy().monitoring.sources
    queries = collect.host_queries(sources)
    assert set(queries) == {
        "cpu_usage_percent",
        "memory_usage_percent",
        *(f"disk_usage_percent.{d}" for d in sources.disk_paths),
    }
    assert f'mountpoint="{sources.disk_paths["data"]}"' in queries["disk_usage_percent.data"]
    prometheus.values.update(
        {
            queries["cpu_usage_percent"]: {"db-1:9100": 91.5, "api-1:9100": 20.0},
            queries["memory_usage_percent"]: {"db-1:9100": 60.0},
            queries["disk_usage_percent.data"]: {"db-1:9100": float("nan")},
        }
    )

    metrics = collect.collect_host_metrics(sources, minutes(5))

    assert metrics == {
        "prometheus_up": 1.0,
        "cpu_usage_percent": {'instance="api-1:9100",job="node"': 20.0, 'instance="db-1:9100",job="node"': 91.5},
        "memory_usage_percent": {'instance="db-1:9100",job="node"': 60.0},
        "disk_usage_percent.data": {},
        "disk_usage_percent.backup": {},
    }
    assert prometheus.queried_times() == [minutes(5).timestamp()] * len(queries)


def test_a_query_answering_several_series_fails_instead_of_picking_one(prometheus):
    prometheus.values["http_request_latency_p95_ms"] = [120.0, 900.0]
    with pytest.raises(
        collect.MonitoringError,
        match=(
            r"^The api_latency_p95_ms query answered 2 series \(.*trading-api-0.*trading-api-1.*\) where one is "
            r"needed: aggregate it in prometheus_queries \(max, sum, avg\)\.$"
        ),
    ):
        collect.collect_application_metrics(
            "prometheus", {"api_latency_p95_ms": "http_request_latency_p95_ms"}, T0, timedelta(seconds=5)
        )
