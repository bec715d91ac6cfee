"""The end-to-end harness: `airflow standalone` on a real scheduler and LocalExecutor, driven over the REST API."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import ROOT, RUN_DIR, TEST_POLICY
from trading_ops.devenv import AirflowStandalone


@pytest.fixture(scope="session")
def fake_kubernetes_e2e(tmp_path_factory):
    """The trading-api Deployment behind a fake Kubernetes API for the whole e2e session."""
    from tests.fakes.kubernetes_workload import FakeDeployment, FakeKubernetes

    deployment = FakeDeployment("trading", "trading-api", {"app": "trading-api"}, replicas=3)
    with FakeKubernetes(deployment) as fake:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
        yield fake


@pytest.fixture(scope="session")
def e2e_service_env(slack_fake, pagerduty_fake, fake_kubernetes_e2e) -> dict[str, str]:
    """Connections of services the DAGs talk to besides trading_db (fakes on 127.0.0.1); extended per service."""
    return {
        "AIRFLOW_CONN_SLACK_ALERTS": slack_fake.connection_json(),
        "AIRFLOW_CONN_PAGERDUTY_EVENTS": pagerduty_fake.connection_json(),
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": fake_kubernetes_e2e.connection_json(fake_kubernetes_e2e.kubeconfig),
    }


@pytest.fixture(scope="session")
def airflow_standalone(pg_cluster, e2e_service_env):
    pg_cluster.create_database("airflow_e2e")
    airflow = AirflowStandalone(
        home=RUN_DIR / "e2e-airflow-home",
        metadata_db_uri=pg_cluster.uri("airflow_e2e", scheme="postgresql+psycopg"),
        extra_env={
            "TRADING_OPS_POLICY": str(TEST_POLICY),
            "AIRFLOW_CONN_TRADING_DB": pg_cluster.uri("trading_db"),
            **e2e_service_env,
        },
    )
    log_file = RUN_DIR / "e2e-airflow.log"
    try:
        airflow.start(log_file)
        yield airflow
    finally:
        airflow.stop()
        # Keep what a failed run needs for triage: the components' output and every task log.
        artifacts = ROOT / "test-artifacts" / "e2e"
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.mkdir(parents=True)
        if log_file.exists():
            shutil.copy(log_file, artifacts / "airflow-standalone.log")
        if (airflow.home / "logs").exists():
            shutil.copytree(airflow.home / "logs", artifacts / "task-logs")
