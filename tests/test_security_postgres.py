"""The monthly checks and PostgreSQL's STARTTLS on a PostgreSQL of their own, whose pg_hba, settings and roles the
tests change (the shared test cluster stays as it is), and Kubernetes RBAC served on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import trustme
from psycopg import sql

from tests.fakes.http_server import RecordingHttpServer
from tests.fakes.kubernetes_api import KubernetesApiFake, group, service_account, user
from tests.support.harness import RUN_DIR
from trading_ops.dev.localpg import LocalCluster, free_port
from trading_ops.policy import load_policy
from trading_ops.security.access import access_right_audit
from trading_ops.security.authlogs import auth_log_review
from trading_ops.security.findings import CheckSourceError
from trading_ops.security.pentest import penetration_test
from trading_ops.security.policy_review import security_policy_review
from trading_ops.security.tls import ssl_cert_check

DATA = Path(__file__).parent / "data" / "security"
NOW = datetime.now(UTC)


def _give_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres", "postgres")


@pytest.fixture(scope="module")
def secure_cluster():
    """A PostgreSQL with TLS (a trustme certificate for 127.0.0.1), scram-sha-256 and connection logging."""
    ca = trustme.CA()
    base = RUN_DIR / f"security-pg-{secrets.token_hex(3)}"
    tls_dir = base / "tls"
    tls_dir.mkdir(parents=True)
    cert = ca.issue_cert("127.0.0.1", "localhost", not_after=NOW + timedelta(days=365))
    cert.cert_chain_pems[0].write_to_path(str(tls_dir / "server.crt"))
    cert.private_key_pem.write_to_path(str(tls_dir / "server.key"))
    (tls_dir / "server.key").chmod(0o600)
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    _give_to_postgres(base, tls_dir, tls_dir / "server.crt", tls_dir / "server.key")
    cluster = LocalCluster(
        base,
        extra_settings={
            "ssl": "on",
            "ssl_cert_file": f"'{tls_dir / 'server.crt'}'",
            "ssl_key_file": f"'{tls_dir / 'server.key'}'",
        },
    )
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")


def admin(cluster: LocalCluster) -> psycopg.Connection:
    return psycopg.connect(cluster.conninfo(), autocommit=True)


def reload_config(cluster: LocalCluster) -> None:
    with admin(cluster) as conn:
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)  # the postmaster applies SIGHUP asynchronously


@contextmanager
def hba_rules(cluster: LocalCluster, *lines: str):
    """pg_hba.conf with `lines` first (they match first), restored afterwards."""
    hba = cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("\n".join(lines) + "\n" + original)
    reload_config(cluster)
    try:
        yield
    finally:
        hba.write_text(original)
        reload_config(cluster)


@contextmanager
def settings(cluster: LocalCluster, **values: str):
    """Server settings changed with ALTER SYSTEM, and set back to what they were (the cluster's own settings live in
    postgresql.auto.conf too, so RESET would lose them)."""

    def alter(conn, changes: dict[str, str]) -> None:
        for name, value in changes.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))

    with admin(cluster) as conn:
        before = {name: conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0] for name in values}
        alter(conn, values)
    reload_config(cluster)
    try:
        yield
    finally:
        with admin(cluster) as conn:
            alter(conn, before)
        reload_config(cluster)


@contextmanager
def statements(cluster: LocalCluster, setup: list[str], teardown: list[str]):
    with admin(cluster) as conn:
        for statement in setup:
            conn.execute(statement)
    try:
        yield
    finally:
        with admin(cluster) as conn:
            for statement in teardown:
                conn.execute(statement)


@pytest.fixture
def reviewed(secure_cluster, make_policy, monkeypatch):
    """The policy's postgres_conn_id pointed at the cluster; `use(changes)` applies more policy changes."""
    monkeypatch.setenv("AIRFLOW_CONN_SECURITY_PG", secure_cluster.uri("postgres"))

    def use(changes: dict | None = None):
        make_policy({"security.postgres_conn_id": "security_pg", **(changes or {})})
        return load_policy()

    return use


def subjects(findings) -> dict[str, str]:
    return {f.subject: f.severity for f in findings}


# --- ssl_cert_check over STARTTLS -------------------------------------------------------------------------------


def test_postgres_starttls_with_a_good_certificate_passes(secure_cluster, reviewed):
    policy = reviewed(
        {
            "security.tls.endpoints": [{"host": "127.0.0.1", "port": secure_cluster.port, "starttls": "postgres"}],
            "security.tls.ca_file": str(secure_cluster.base_dir / "ca.pem"),
        }
    )
    assert ssl_cert_check(policy, NOW) == []
    findings = ssl_cert_check(policy, NOW + timedelta(days=340))
    assert subjects(findings) == {f"127.0.0.1:{secure_cluster.port} certificate expiry": "warning"}
    assert findings[0].evidence["starttls"] == "postgres" and findings[0].evidence["protocol"] == "TLSv1.3"


# --- security_policy_review ---------------------------------------------------------------------------------------


@pytest.fixture
def hardened_airflow(monkeypatch):
    from cryptography.fernet import Fernet

    monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", secrets.token_hex(32))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API__EXPOSE_CONFIG", "False")


def test_policy_review_of_a_hardened_system_has_no_findings(reviewed, hardened_airflow):
    policy = reviewed({"security.policy_review.sshd_command": ["cat", str(DATA / "sshd_config-hardened")]})
    assert security_policy_review(policy, NOW) == []


def test_policy_review_reports_weak_postgres_sshd_and_airflow_settings(
    secure_cluster, reviewed, hardened_airflow, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    monkeypatch.setenv("AIRFLOW__API__EXPOSE_CONFIG", "True")
    monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", "temporary_key")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    policy = reviewed({"security.policy_review.sshd_command": ["cat", str(DATA / "sshd-T-weak.txt")]})
    with (
        settings(secure_cluster, ssl="off", password_encryption="md5", log_connections="off", archive_timeout="5min"),
        hba_rules(
            secure_cluster,
            "host all all 0.0.0.0/0 trust",
            "host all all 127.0.0.1/32 trust",
            "host all etl 10.20.0.0/16 password",
            "host all grafana 10.20.0.0/16 md5",
            "hostssl all all 10.20.0.0/33 scram-sha-256",
            "local all all trust",
        ),
    ):
        findings = security_policy_review(policy, NOW)
    assert subjects(findings) == {
        "postgresql setting ssl": "critical",
        "postgresql setting password_encryption": "warning",
        "postgresql setting log_connections": "warning",
        "postgresql archive_timeout": "warning",
        "pg_hba trust host all all 0.0.0.0": "critical",
        "pg_hba trust host all all 127.0.0.1": "warning",
        "pg_hba password host all etl 10.20.0.0": "warning",
        "pg_hba md5 host all grafana 10.20.0.0": "info",
        "pg_hba error line 5": "warning",
        "sshd PasswordAuthentication": "critical",
        "sshd PermitRootLogin": "critical",
        "sshd AuthenticationMethods": "warning",
        "airflow simple_auth_manager_all_admins": "critical",
        "airflow api.secret_key": "critical",
        "airflow api.expose_config": "warning",
        "airflow core.fernet_key": "warning",
    }
    by_subject = {f.subject: f for f in findings}
    assert by_subject["airflow api.secret_key"].evidence == {"length": len("temporary_key")}, "never the secret itself"
    assert "invalid CIDR mask" in by_subject["pg_hba error line 5"].message


def test_sshd_root_by_key_and_no_second_factor_are_warnings(reviewed, hardened_airflow):
    policy = reviewed({"security.policy_review.sshd_command": ["cat", str(DATA / "sshd_config-key-only")]})
    assert subjects(security_policy_review(policy, NOW)) == {
        "sshd PermitRootLogin": "warning",
        "sshd AuthenticationMethods": "warning",
    }


def test_policy_review_fails_when_sshd_or_postgres_cannot_be_read(reviewed, monkeypatch):
    policy = reviewed({"security.policy_review.sshd_command": ["sshd-not-here", "-T"]})
    with pytest.raises(CheckSourceError, match=r"^Cannot read the sshd configuration: the command 'sshd-not-here'"):
        security_policy_review(policy, NOW)
    monkeypatch.setenv("AIRFLOW_CONN_SECURITY_PG", f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(psycopg.OperationalError):
        security_policy_review(policy, NOW)


# --- penetration_test -----------------------------------------------------------------------------------------------


@pytest.fixture
def listener():
    """A plain TCP service on 127.0.0.1 that counts connections (an unexpected open port, or one never probed)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted = []

    def count():
        while True:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(client.getpeername())
            client.close()

    import threading

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()
    thread.join(timeout=2)


def pentest_policy(reviewed, cluster, probe_ports, credentials=None, airflow_api_urls=(), more=None):
    return reviewed(
        {
            **(more or {}),
            "security.penetration_test.targets": [
                {"host": "127.0.0.1", "allowed_ports": [cluster.port], "postgres_ports": [cluster.port]}
            ],
            "security.penetration_test.probe_ports": probe_ports,
            "security.penetration_test.timeout": "2s",
            "security.penetration_test.airflow_api_urls": list(airflow_api_urls),
            **({"security.penetration_test.default_credentials": credentials} if credentials else {}),
        }
    )


def test_pentest_of_a_hardened_database_finds_only_the_unexpected_port(secure_cluster, reviewed, listener):
    extra_port, accepted = listener
    policy = pentest_policy(reviewed, secure_cluster, [secure_cluster.port, extra_port, free_port()])
    findings = penetration_test(policy, NOW)
    assert subjects(findings) == {f"127.0.0.1:{extra_port} open": "warning"}
    assert len(accepted) == 1, "one TCP connect to the open port, nothing more"


def test_pentest_never_touches_what_the_policy_does_not_list(secure_cluster, reviewed, listener):
    unlisted_port, accepted = listener
    policy = pentest_policy(reviewed, secure_cluster, [secure_cluster.port])
    assert penetration_test(policy, NOW) == []
    assert accepted == []


def test_pentest_finds_passwordless_and_default_password_logins_and_old_tls(secure_cluster, reviewed):
    credentials = [
        {"user": "postgres", "password": ""},
        {"user": "postgres", "password": "postgres"},
        {"user": "trader", "password": "trader"},
        {"user": "mallory", "password": ""},
    ]
    policy = pentest_policy(reviewed, secure_cluster, [secure_cluster.port], credentials)
    with (
        statements(
            secure_cluster,
            ["CREATE ROLE trader LOGIN PASSWORD 'trader'", "CREATE ROLE mallory LOGIN"],
            ["DROP ROLE trader", "DROP ROLE mallory"],
        ),
        hba_rules(secure_cluster, "host all mallory 127.0.0.1/32 trust"),
        settings(secure_cluster, ssl_min_protocol_version="TLSv1", ssl_ciphers="ALL:@SECLEVEL=0"),
    ):
        findings = penetration_test(policy, NOW)
    port = secure_cluster.port
    assert subjects(findings) == {
        f"127.0.0.1:{port} postgresql passwordless mallory": "critical",
        f"127.0.0.1:{port} postgresql default password trader": "critical",
        f"127.0.0.1:{port} weak tls": "warning",
    }
    weak = next(f for f in findings if f.subject.endswith("weak tls"))
    assert weak.evidence == {"accepted_old_protocols": ["TLSv1", "TLSv1.1"], "starttls": "postgres"}


def test_pentest_reports_an_airflow_api_open_without_credentials(secure_cluster, reviewed):
    with RecordingHttpServer() as open_api, RecordingHttpServer() as closed_api:
        open_api.route("GET", "/api/v2/dags")(lambda request: (200, {"dags": [], "total_entries": 0}))
        closed_api.route("GET", "/api/v2/dags")(lambda request: (401, {"detail": "Not authenticated"}))
        policy = pentest_policy(
            reviewed, secure_cluster, [secure_cluster.port], airflow_api_urls=[open_api.url, closed_api.url]
        )
        findings = penetration_test(policy, NOW)
    assert subjects(findings) == {f"{open_api.url} airflow api without auth": "critical"}
    assert closed_api.paths("GET") == ["/api/v2/dags"]
    assert "Authorization" not in open_api.requests[0].headers


def test_pentest_verifies_an_https_airflow_api_against_the_policys_ca(secure_cluster, reviewed):
    with RecordingHttpServer(tls_dir=secure_cluster.base_dir) as open_api:
        open_api.route("GET", "/api/v2/dags")(lambda request: (200, {"dags": [], "total_entries": 0}))
        policy = pentest_policy(reviewed, secure_cluster, [secure_cluster.port], airflow_api_urls=[open_api.url])
        with pytest.raises(
            CheckSourceError, match=r"^Cannot reach the Airflow API at https://127\.0\.0\.1:\d+: .*CERTIFICATE"
        ):
            penetration_test(policy, NOW)
        assert open_api.requests == [], "an untrusted server is not asked anything"
        policy = pentest_policy(
            reviewed,
            secure_cluster,
            [secure_cluster.port],
            airflow_api_urls=[open_api.url],
            more={"security.tls.ca_file": str(open_api.ca_file)},
        )
        findings = penetration_test(policy, NOW)
    assert subjects(findings) == {f"{open_api.url} airflow api without auth": "critical"}


def test_no_tls_on_a_database_is_critical_in_the_pentest_as_in_ssl_cert_check(pg_cluster, make_policy):
    port = pg_cluster.port
    make_policy(
        {
            "security.penetration_test.targets": [
                {"host": "127.0.0.1", "allowed_ports": [port], "postgres_ports": [port]}
            ],
            "security.penetration_test.probe_ports": [port],
            "security.penetration_test.airflow_api_urls": [],
            "security.tls.endpoints": [{"host": "127.0.0.1", "port": port, "starttls": "postgres"}],
        }
    )
    assert subjects(penetration_test(load_policy(), NOW)) == {f"127.0.0.1:{port} no tls": "critical"}
    assert subjects(ssl_cert_check(load_policy(), NOW)) == {f"127.0.0.1:{port} tls": "critical"}


def test_pentest_fails_when_a_target_cannot_be_seen(make_policy):
    make_policy({"security.penetration_test.targets": [{"host": "127.0.0.1", "allowed_ports": [free_port()]}]})
    with pytest.raises(CheckSourceError, match=r"^Cannot probe 127.0.0.1: none of its allowed ports \[\d+\] answered"):
        penetration_test(load_policy(), NOW)
    make_policy({"security.penetration_test.targets": [{"host": "trading-db.invalid", "allowed_ports": [5432]}]})
    with pytest.raises(CheckSourceError, match=r"^Cannot probe trading-db.invalid: the name does not resolve"):
        penetration_test(load_policy(), NOW)


# --- auth_log_review on this cluster's log: a trust login ---------------------------------------------------------


def test_auth_log_review_sees_a_trust_login_in_the_real_log(secure_cluster, make_policy):
    with (
        statements(secure_cluster, ["CREATE ROLE mallory LOGIN"], ["DROP ROLE mallory"]),
        hba_rules(secure_cluster, "host all mallory 127.0.0.1/32 trust"),
    ):
        psycopg.connect(f"host=127.0.0.1 port={secure_cluster.port} user=mallory dbname=postgres").close()
        time.sleep(0.2)
    make_policy(
        {
            "security.auth_logs.ssh_paths": [str(DATA / "auth-traditional.log")],
            "security.auth_logs.postgres_paths": [str(secure_cluster.log_file)],
            "security.auth_logs.window": "1h",
        }
    )
    findings = {f.subject: f for f in auth_log_review(load_policy(), datetime.now(UTC) + timedelta(seconds=1))}
    trust = findings["postgresql trust login mallory from 127.0.0.1"]
    assert trust.severity == "warning" and "authenticated by trust" in trust.message


# --- access_right_audit ----------------------------------------------------------------------------------------------


@pytest.fixture
def rbac(tmp_path, monkeypatch):
    with KubernetesApiFake() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="trading")
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", fake.connection_json(kubeconfig, "trading"))
        # What every cluster has, and what the manual asks for.
        fake.add_cluster_role_binding("cluster-admin", "cluster-admin", [group("system:masters")])
        fake.add_cluster_role_binding("system:kube-scheduler", "system:kube-scheduler", [user("system:kube-scheduler")])
        fake.add_cluster_role_binding("coredns-admin", "cluster-admin", [service_account("kube-system", "coredns")])
        fake.add_cluster_role_binding("devops-lead-admin", "cluster-admin", [user("devops-lead")])
        for namespace in ("dev", "staging"):
            fake.add_role_binding(namespace, "dev-team-developer", "developer", [group("dev-team")])
        yield fake


TRADING_TABLES = """
CREATE TABLE IF NOT EXISTS public.orders (id bigint PRIMARY KEY, symbol text NOT NULL);
CREATE TABLE IF NOT EXISTS public.market_data (id bigint PRIMARY KEY, close numeric NOT NULL)
"""
POLICY_ROLES = [
    "CREATE ROLE trading_app LOGIN PASSWORD 'app-secret-1'",
    "CREATE ROLE trading_readonly LOGIN PASSWORD 'ro-secret-1'",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders, public.market_data TO trading_app",
    "GRANT SELECT ON public.orders, public.market_data TO trading_readonly",
]
DROP_POLICY_ROLES = [
    "DROP OWNED BY trading_app, trading_readonly",
    "DROP ROLE trading_app",
    "DROP ROLE trading_readonly",
]


def test_access_audit_of_rights_as_the_policy_gives_them(secure_cluster, reviewed, rbac):
    policy = reviewed()
    with statements(secure_cluster, [TRADING_TABLES, *POLICY_ROLES], DROP_POLICY_ROLES):
        assert access_right_audit(policy, NOW) == []
    assert {
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    } <= set(rbac.paths("GET"))


def test_access_audit_reports_roles_grants_and_bindings_beyond_the_policy(secure_cluster, reviewed, rbac):
    rbac.add_cluster_role_binding("contractor-admin", "cluster-admin", [user("contractor-x")])
    rbac.add_cluster_role_binding("api-admin", "cluster-admin", [service_account("trading", "trading-api")])
    rbac.add_cluster_role_binding("dev-team-everywhere", "developer", [group("dev-team")])
    rbac.add_role_binding("trading", "dev-team-in-prod", "developer", [group("dev-team")])
    rbac.add_role_binding("dev", "dev-team-admin", "admin", [group("dev-team")])
    rbac.add_role_binding("staging", "intern-developer", "developer", [user("intern")])
    policy = reviewed()
    setup = [
        TRADING_TABLES,
        *POLICY_ROLES,
        "CREATE ROLE shadow_admin SUPERUSER LOGIN PASSWORD 'x-secret-1'",
        "CREATE ROLE etl_batch LOGIN CREATEROLE PASSWORD 'etl-secret-1'",
        "GRANT pg_write_server_files TO etl_batch",
        "GRANT trading_readonly TO etl_batch",
        "GRANT INSERT ON public.orders TO trading_readonly",
        "GRANT UPDATE ON public.market_data TO PUBLIC",
    ]
    teardown = [
        "REVOKE UPDATE ON public.market_data FROM PUBLIC",
        "DROP ROLE shadow_admin",
        "DROP OWNED BY etl_batch",
        "DROP ROLE etl_batch",
        *DROP_POLICY_ROLES,
    ]
    with statements(secure_cluster, setup, teardown):
        findings = access_right_audit(policy, NOW)
    assert subjects(findings) == {
        "postgresql superuser shadow_admin": "critical",
        "postgresql login role shadow_admin": "warning",
        "postgresql login role etl_batch": "warning",
        "postgresql role etl_batch CREATEROLE": "warning",
        "postgresql membership etl_batch in pg_write_server_files": "critical",
        "postgresql membership etl_batch in trading_readonly": "warning",
        "postgresql grant INSERT to trading_readonly": "warning",
        "postgresql grant UPDATE to PUBLIC": "critical",
        "kubernetes cluster-admin bound to User contractor-x cluster-wide": "critical",
        "kubernetes cluster-admin bound to ServiceAccount system:serviceaccount:trading:trading-api cluster-wide": (
            "critical"
        ),
        "kubernetes developer for dev-team cluster-wide": "critical",
        "kubernetes developer for dev-team in namespace trading": "warning",
        "kubernetes dev-team holds admin in namespace dev": "warning",
        "kubernetes developer bound to User intern in namespace staging": "warning",
    }
    grant = next(f for f in findings if f.subject == "postgresql grant INSERT to trading_readonly")
    assert grant.evidence["tables"] == ["public.orders"]


def test_access_audit_reports_any_binding_outside_the_policy_and_reads_the_role_kind(secure_cluster, reviewed, rbac):
    # Roles the policy does not name, bound to subjects it does not know.
    rbac.add_cluster_role_binding("contractor-admin", "admin", [user("contractor-x")])
    rbac.add_cluster_role_binding("ci-edit", "edit", [service_account("ci", "deployer")])
    rbac.add_cluster_role_binding("devops-lead-view", "view", [user("devops-lead")])
    rbac.add_role_binding("trading", "contractor-edit", "edit", [user("contractor-x")])
    # A Role that only borrows cluster-admin's name is not the policy's cluster-admin, even for devops-lead.
    rbac.add_role_binding("trading", "lookalike", "cluster-admin", [user("devops-lead")], role_kind="Role")
    # A namespaced Role for a policy role limited to namespaces is that role; a workload's own RBAC is not reviewed.
    rbac.add_role_binding("dev", "dev-team-developer-role", "developer", [group("dev-team")], role_kind="Role")
    rbac.add_role_binding("trading", "api-reads-config", "config-reader", [service_account("trading", "trading-api")])
    policy = reviewed()
    with statements(secure_cluster, [TRADING_TABLES, *POLICY_ROLES], DROP_POLICY_ROLES):
        findings = access_right_audit(policy, NOW)
    assert subjects(findings) == {
        "kubernetes contractor-x holds admin cluster-wide": "critical",
        "kubernetes system:serviceaccount:ci:deployer holds edit cluster-wide": "critical",
        "kubernetes devops-lead holds view cluster-wide": "critical",
        "kubernetes contractor-x holds edit in namespace trading": "warning",
        "kubernetes devops-lead holds Role cluster-admin in namespace trading": "warning",
    }
    contractor = next(f for f in findings if f.subject == "kubernetes contractor-x holds admin cluster-wide")
    assert contractor.message == (
        "User contractor-x is bound to admin cluster-wide (ClusterRoleBinding contractor-admin), "
        "which the policy does not grant"
    )
    assert contractor.evidence["role_kind"] == "ClusterRole"


def test_access_audit_notes_policy_grants_without_a_binding(secure_cluster, reviewed, rbac):
    rbac.objects["rolebindings"] = [b for b in rbac.objects["rolebindings"] if b["metadata"]["namespace"] != "staging"]
    policy = reviewed()
    with statements(secure_cluster, [TRADING_TABLES, *POLICY_ROLES], DROP_POLICY_ROLES):
        findings = access_right_audit(policy, NOW)
    assert subjects(findings) == {"kubernetes developer for dev-team in namespace staging not bound": "info"}


def test_access_audit_fails_when_kubernetes_cannot_be_read(secure_cluster, reviewed, rbac):
    rbac.fail_with = 401
    with pytest.raises(
        CheckSourceError,
        match=r"^Cannot read the RBAC bindings: the Kubernetes API of kubernetes_default answered 401 \w+",
    ):
        access_right_audit(reviewed(), NOW)
