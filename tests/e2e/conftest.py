"""The end-to-end harness: `airflow standalone` on a real scheduler and LocalExecutor, driven over the REST API."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.fakes.kubernetes_api import group, user
from tests.fakes.kubernetes_workload import TradingApiFake
from tests.fakes.package_index import PackageIndexFake
from tests.support.harness import ROOT, RUN_DIR, TEST_POLICY
from tests.support.logs import SIGNING_SECRET
from trading_ops.dev.standalone import AirflowStandalone

SECURITY_DATA = ROOT / "tests" / "data" / "security"


@pytest.fixture(scope="session")
def package_index():
    """PyPI JSON API and OSV on 127.0.0.1: every pin of requirements.txt is the newest release, one has an advisory."""
    with PackageIndexFake() as index:
        index.add_packages_from_requirements(ROOT / "requirements.txt")
        index.add_package("jinja2", ["3.1.6", "3.1.7"])
        index.add_advisory("GHSA-e2e0-0000-0001", "jinja2", fixed="3.1.7", summary="an advisory of the e2e fake")
        yield index


@pytest.fixture(scope="session")
def kubernetes_api():
    """The Kubernetes API with the manual's RBAC bindings, the baseline NetworkPolicies of `trading`, and the
    trading-api Deployment (3 pods) that the restore scales."""
    with TradingApiFake() as api:
        api.add_cluster_role_binding("cluster-admin", "cluster-admin", [group("system:masters")])
        api.add_cluster_role_binding("devops-lead-admin", "cluster-admin", [user("devops-lead")])
        for namespace in ("dev", "staging"):
            api.add_role_binding(namespace, "dev-team-developer", "developer", [group("dev-team")])
        api.add_network_policy("trading", "default-deny-ingress", {}, ingress=None)
        api.add_network_policy(
            "trading",
            "allow-trading-api-to-db",
            {"app": "trading-db"},
            ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "trading-api"}}}], "ports": [{"port": 5432}]}],
        )
        yield api


def write_security_e2e_policy(pg_cluster) -> str:
    """The test policy with the security checks pointed at this machine: the test cluster (its log, its port),
    the recorded nft and sshd fixtures, and no Airflow API to probe (its port is chosen after this is written)."""
    policy = yaml.safe_load(TEST_POLICY.read_text())
    security = policy["security"]
    security["auth_logs"]["ssh_paths"] = [str(SECURITY_DATA / "auth.log")]
    security["auth_logs"]["postgres_paths"] = [str(pg_cluster.log_file)]
    security["tls"]["endpoints"] = [{"host": "127.0.0.1", "port": pg_cluster.port, "starttls": "postgres"}]
    security["firewall"]["command"] = ["cat", str(SECURITY_DATA / "nft-good.json")]
    security["penetration_test"].update(
        targets=[{"host": "127.0.0.1", "allowed_ports": [pg_cluster.port], "postgres_ports": [pg_cluster.port]}],
        probe_ports=[pg_cluster.port],
        airflow_api_urls=[],
    )
    security["policy_review"]["sshd_command"] = ["cat", str(SECURITY_DATA / "sshd_config-hardened")]
    path = RUN_DIR / "e2e_ops_policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def audit_log_identity():
    """The age identity of the audit-log key; Airflow gets only its recipient (public key), as in production."""
    from pyrage import x25519

    return x25519.Identity.generate()


@pytest.fixture(scope="session")
def e2e_service_env(
    pg_cluster,
    slack_fake,
    pagerduty_fake,
    package_index,
    kubernetes_api,
    audit_log_identity,
    prometheus_fake,
    heartbeat_fake,
    redis_caches,
) -> dict[str, str]:
    """Connections of services the DAGs talk to besides trading_db (fakes on 127.0.0.1); extended per service.
    TRADING_OPS_POLICY here is the e2e Airflow's policy (the only place it is set)."""
    kubeconfig = kubernetes_api.write_kubeconfig(RUN_DIR / "e2e-kubeconfig", namespace="trading")
    # A healthy trading-api as Prometheus sees it, and the ops state database beside trading_db.
    from tests.support.monitoring import healthy_metrics
    from trading_ops.policy import load_policy

    policy = load_policy()
    healthy = healthy_metrics(policy)
    prometheus_fake.values.update(
        {query: healthy[name] for name, query in policy.monitoring.sources.prometheus_queries.items()}
    )
    pg_cluster.create_database("trading_ops_e2e")
    return {
        "AIRFLOW_CONN_PROMETHEUS": prometheus_fake.connection_json(),
        "AIRFLOW_CONN_HEARTBEAT": heartbeat_fake.connection_json(),
        "AIRFLOW_CONN_OPS_STATE": pg_cluster.uri("trading_ops_e2e"),
        "AIRFLOW_CONN_SLACK_ALERTS": slack_fake.connection_json(),
        "AIRFLOW_CONN_PAGERDUTY_EVENTS": pagerduty_fake.connection_json(),
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": kubernetes_api.connection_json(kubeconfig, "trading"),
        "AIRFLOW_CONN_OSV_API": package_index.connection_json(),
        "AIRFLOW_CONN_PACKAGE_INDEX": package_index.connection_json(),
        "TRADING_OPS_POLICY": write_security_e2e_policy(pg_cluster),
        "AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY": json.dumps(
            {"conn_type": "generic", "password": str(audit_log_identity.to_public())}
        ),
        # The caches' redis-servers of the session (capacity_review).
        **{key: value for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_REDIS_")},
        # The private half of the test policy's logs.chain.public_key.
        "AIRFLOW_CONN_AUDIT_LOG_SIGNING_KEY": json.dumps({"conn_type": "generic", "password": SIGNING_SECRET}),
    }


# Package scope: the real scheduler stops once the e2e tests are done. Left running (the e2e runs unpause their
# DAGs), it would run system_health, incident_tracker and incident_response on their schedules for the rest of
# the session, into the session's Slack, PagerDuty and heartbeat fakes that later tests assert on.
@pytest.fixture(scope="package")
def airflow_standalone(pg_cluster, e2e_service_env):
    pg_cluster.create_database("airflow_e2e")
    airflow = AirflowStandalone(
        home=RUN_DIR / "e2e-airflow-home",
        metadata_db_uri=pg_cluster.uri("airflow_e2e", scheme="postgresql+psycopg"),
        # e2e_service_env carries TRADING_OPS_POLICY: the test policy with the security checks pointed at this machine.
        extra_env={"AIRFLOW_CONN_TRADING_DB": pg_cluster.uri("trading_db"), **e2e_service_env},
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
