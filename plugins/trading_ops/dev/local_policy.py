"""The policy of a local run (`make up`, the tests): the shipped policy with every path moved under one directory.

Nothing outside that directory is read or written, and the security checks look at the local cluster and Airflow
instead of the production hosts; what a developer machine cannot check is disabled, saying what it needs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from trading_ops.dev.localpg import LocalCluster
from trading_ops.dev.standalone import ADMIN_USER, APPROVER_USER, LOCAL_USERS
from trading_ops.paths import CONFIG_DIR


def write_local_policy(
    dest: Path, root: Path, *, wal_archive_dir: Path, airflow_url: str, postgres: LocalCluster | None = None
) -> Path:
    """Copy the shipped policy with every path moved under `root`, so nothing outside it is read or written; with
    `postgres`, the security checks look at that cluster and this Airflow instead of the production hosts."""
    policy = yaml.safe_load((CONFIG_DIR / "ops_policy.yaml").read_text())
    policy["backup"]["repository"] = str(root / "backups")
    policy["backup"]["wal_archive_dir"] = str(wal_archive_dir)
    # One machine and no node-exporter: host metrics are this machine's, through psutil (labelled so).
    policy["monitoring"]["sources"]["host_metrics"] = "psutil"
    policy["monitoring"]["sources"]["disk_paths"] = {"data": str(root), "backup": str(root / "backups")}
    policy["alerting"]["airflow_base_url"] = airflow_url
    policy["logs"]["chain"]["public_key"] = local_log_signing_key(root)[1]
    # Either local user approves a live restore the other one triggered.
    policy["restore"]["approval"]["approvers"] = list(LOCAL_USERS)
    # The escalation chains alternate between the two local users, so an escalation changes who is asked.
    policy["incidents"]["roles"] = LOCAL_INCIDENT_ROLES
    for name, log_class in policy["logs"]["classes"].items():
        for index, path in enumerate(log_class["paths"]):
            path["directory"] = str(root / "logs" / name / str(index))
    if postgres is not None:
        _point_security_checks_at(policy["security"], postgres, airflow_url)
        # The caches are local redis-servers (`make up` starts one per cache); there is no Kubernetes here.
        policy["capacity"]["disabled_reviews"] = LOCAL_DISABLED_REVIEWS
    (root / "backups").mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(policy, sort_keys=False))
    return dest


def local_log_signing_key(root: Path) -> tuple[str, str]:
    """The key pair that signs the log chains of a local run (private, public), kept in `root` (made once)."""
    from trading_ops.logs.chain import generate_signing_key, public_key_of

    key_file = root / "log-chain-signing-key.txt"
    if not key_file.exists():
        root.mkdir(parents=True, exist_ok=True)
        key_file.touch(0o600)
        key_file.write_text(generate_signing_key()[0] + "\n")
    private = key_file.read_text().strip()
    return private, public_key_of(private)


# What a developer machine lacks for the other checks; `make up` disables them with these sentences.
LOCAL_DISABLED_CHECKS = {
    "vulnerability_scan": "it needs the osv_api connection (https://api.osv.dev or a mirror)",
    "dependency_updates": "it needs the package_index connection (https://pypi.org or a mirror)",
    "auth_log_review": "it needs the host's sshd/sudo auth log (security.auth_logs.ssh_paths)",
    "failed_login_attempts": "it needs the host's sshd/sudo auth log (security.auth_logs.ssh_paths)",
    "firewall_rule_review": "it needs nft run as root and the kubernetes_default connection",
    "security_policy_review": "it needs `sshd -T` of the host (security.policy_review.sshd_command)",
    "access_right_audit": "it needs the kubernetes_default connection to review RBAC",
}


LOCAL_INCIDENT_ROLES = {
    "devops_lead": [APPROVER_USER],
    "system_architect": [ADMIN_USER],
    "cto": [APPROVER_USER],
    "devops_engineer": [APPROVER_USER],
    "team_lead": [ADMIN_USER],
    "on_call_engineer": [ADMIN_USER],
}


LOCAL_DISABLED_REVIEWS = {"workload": "it needs the kubernetes_default connection to the trading-api cluster"}


def _point_security_checks_at(security: dict, postgres: LocalCluster, airflow_url: str) -> None:
    """TLS and the penetration test look at the local cluster and Airflow API (and find the cluster's missing TLS);
    what needs a real host or Kubernetes is disabled, saying what it needs. The PostgreSQL connection log is the
    cluster's, so enabling the log reviews needs only an sshd log."""
    security["auth_logs"]["postgres_paths"] = [str(postgres.log_file)]
    security["tls"]["endpoints"] = [{"host": "127.0.0.1", "port": postgres.port, "starttls": "postgres"}]
    security["penetration_test"].update(
        targets=[{"host": "127.0.0.1", "allowed_ports": [postgres.port], "postgres_ports": [postgres.port]}],
        probe_ports=[postgres.port],
        airflow_api_urls=[airflow_url],
    )
    security["disabled_checks"] = LOCAL_DISABLED_CHECKS
