"""The policy file holds the manual's numbers, validates at load, and names the bad key in one sentence."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from trading_ops.errors import UserError
from trading_ops.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy
from trading_ops.security.catalog import checks_of


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def test_shipped_policy_holds_the_manuals_numbers():
    policy = load_policy(DEFAULT_POLICY_PATH)
    health = policy.monitoring.system_health
    assert (health.cpu_usage.warning, health.cpu_usage.critical) == (70, 85)
    assert (health.memory_usage.warning, health.memory_usage.critical) == (75, 90)
    assert (health.disk_usage.warning, health.disk_usage.critical) == (80, 90)
    app = policy.monitoring.application_metrics
    assert (app.api_latency.p95_ms, app.api_latency.p99_ms, app.error_rate_percent) == (500, 1000, 0.1)
    assert (app.request_rate.min_per_second, app.request_rate.max_per_second) == (100, 10000)

    rules = {rule.name: rule for rule in policy.alert_rules}
    assert rules["high_priority"].metric == "error_rate_percent" and rules["high_priority"].threshold == 1
    assert rules["high_priority"].for_ == timedelta(minutes=5)
    assert rules["high_priority"].slack_channels == ["#alerts-critical"]
    assert rules["high_priority"].pagerduty_service == "trading-team"
    assert (rules["medium_priority"].threshold, rules["medium_priority"].for_) == (500, timedelta(minutes=10))
    assert rules["medium_priority"].slack_channels == ["#alerts-warning"]
    assert (rules["low_priority"].threshold, rules["low_priority"].for_) == (70, timedelta(minutes=15))
    assert rules["low_priority"].slack_channels == ["#alerts-info"]

    p1, p2, p3 = (policy.incident_levels[level] for level in ("P1", "P2", "P3"))
    assert (p1.respond_within, p1.resolve_within) == (timedelta(minutes=15), timedelta(hours=2))
    assert p1.escalation == ["devops_lead", "system_architect", "cto"]
    assert (p2.respond_within, p2.resolve_within) == (timedelta(minutes=30), timedelta(hours=4))
    assert p2.escalation == ["devops_engineer", "team_lead"]
    assert (p3.respond_within, p3.resolve_within, p3.escalation) == (
        timedelta(hours=2),
        timedelta(hours=8),
        ["on_call_engineer"],
    )

    assert policy.maintenance.archive.retention_months == 3
    assert policy.maintenance.archive.time_column == "timestamp"
    # The schedules (full Sundays 01:00, incremental daily 01:00) are the DAG files': tests/test_dag_integrity.py.
    assert policy.backup.full.retention == timedelta(weeks=4)
    assert policy.backup.incremental.retention == timedelta(days=7)
    assert policy.backup.transaction_logs.retention == timedelta(days=30)

    logs = policy.logs.classes
    gib = 1024**3
    assert (logs["application_logs"].retention, logs["application_logs"].max_size) == (timedelta(days=30), 10 * gib)
    assert (logs["system_logs"].retention, logs["system_logs"].max_size) == (timedelta(days=90), 50 * gib)
    assert (logs["audit_logs"].retention, logs["audit_logs"].max_size) == (timedelta(days=365), 100 * gib)
    assert all(log_class.compression for log_class in logs.values())
    assert [name for name, log_class in logs.items() if log_class.encryption] == ["audit_logs"]

    # The check sets live in the catalog only (the DAGs build their tasks from it while parsing).
    assert [check.name for check in checks_of("daily")] == [
        "vulnerability_scan",
        "auth_log_review",
        "failed_login_attempts",
    ]
    assert [check.name for check in checks_of("weekly")] == [
        "dependency_updates",
        "ssl_cert_check",
        "firewall_rule_review",
    ]
    assert [check.name for check in checks_of("monthly")] == [
        "penetration_test",
        "security_policy_review",
        "access_right_audit",
    ]
    ssh = {entry.role: entry for entry in policy.security.access_control.ssh_access}
    assert ssh["admin"].auth == ["public_key", "2fa"] and ssh["developer"].restrictions == [
        "read_only",
        "audit_logging",
    ]
    k8s = {entry.role: entry for entry in policy.security.access_control.kubernetes}
    assert k8s["cluster-admin"].users == ["devops-lead"]
    assert (k8s["developer"].users, k8s["developer"].namespaces) == (["dev-team"], ["dev", "staging"])

    assert policy.cache["market_data"].ttl == timedelta(seconds=60) and policy.cache["market_data"].eviction == "LRU"
    assert policy.cache["user_portfolio"].max_size == 500 * 1024**2 and policy.cache["user_portfolio"].eviction == "LFU"
    assert policy.cache["trading_signals"].ttl == timedelta(seconds=30)
    assert policy.resources.autoscaling.min_replicas == 3 and policy.resources.autoscaling.max_replicas == 10
    assert policy.resources.pod_resources.limits.memory == "4Gi"
    assert (policy.kubernetes.deployment, policy.kubernetes.label_selector) == ("trading-api", "app=trading-api")
    assert policy.level_for_dag("db_restore") == "P1" and policy.level_for_dag("db_backup_full") == "P2"
    assert policy.level_for_dag("log_rotation") == "P3"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["backup"]["full"].update(retention="four weeks"),
            "backup.full.retention: 'four weeks' is not a duration",
        ),
        (
            lambda p: p["monitoring"]["system_health"]["cpu_usage"].update(critical=60),
            "monitoring.system_health.cpu_usage: critical must not be below warning",
        ),
        (lambda p: p["logs"]["classes"]["audit_logs"].update(max_size="lots"), "logs.classes.audit_logs.max_size"),
        (lambda p: p["maintenance"]["archive"].pop("time_column"), "maintenance.archive.time_column is required"),
        (lambda p: p["alerting"].update(slack_channel="#x"), "alerting.slack_channel is not a known setting"),
        (lambda p: p["alerting"]["dag_levels"].update(db_restore="P0"), "alerting.dag_levels.db_restore"),
        (lambda p: p["incident_levels"].pop("P2"), "incident_levels lacks P2"),
        (
            lambda p: p["security"]["access_control"]["ssh_access"][1].update(auth=["public_key"]),
            "security.access_control.ssh_access.1.auth: must be [public_key, 2fa]",
        ),
    ],
)
def test_a_bad_policy_fails_with_one_sentence_naming_the_key(shipped, change, message):
    change(shipped)
    with pytest.raises(PolicyError) as excinfo:
        parse_policy(shipped, "ops_policy.yaml")
    text = str(excinfo.value)
    assert message in text
    assert text.startswith("Policy ops_policy.yaml is invalid: ") and text.endswith(".") and "\n" not in text


def test_policy_env_var_selects_the_file(tmp_path, monkeypatch, shipped):
    shipped["timezone"] = "UTC"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(shipped))
    monkeypatch.setenv("TRADING_OPS_POLICY", str(other))
    assert load_policy().timezone == "UTC"


def test_missing_or_broken_policy_file_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_OPS_POLICY", str(tmp_path / "absent.yaml"))
    with pytest.raises(PolicyError, match=r"absent.yaml cannot be read: No such file or directory\.$"):
        load_policy()
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: [1\n")
    monkeypatch.setenv("TRADING_OPS_POLICY", str(broken))
    with pytest.raises(PolicyError, match="is not valid YAML"):
        load_policy()


# Keys nothing read (editing them changed nothing) and the schedules, which live in the DAG files: each is refused.
UNREAD_KEYS = {
    "restore.kubernetes_conn_id": "kubernetes_default",
    "backup.full.type": "snapshot",
    "backup.incremental.type": "wal",
    "backup.transaction_logs.archive": True,
    "incident_procedure": ["detect", "judge_severity"],
    "monitoring.schedule": "*/5 * * * *",
    "maintenance.schedule": "0 3 * * *",
    "backup.full.schedule": "0 1 * * 0",
    "backup.incremental.schedule": "0 1 * * *",
    "logs.schedule": "30 0 * * *",
    "security.schedules": {"daily": "0 2 * * *"},
    "security.checks": {"daily": ["vulnerability_scan"]},
}


@pytest.mark.parametrize("dotted", UNREAD_KEYS)
def test_a_key_nothing_reads_is_refused(shipped, dotted):
    *parents, last = dotted.split(".")
    node = shipped
    for key in parents:
        node = node[key]
    node[last] = UNREAD_KEYS[dotted]
    with pytest.raises(PolicyError, match=rf"^Policy ops_policy.yaml is invalid: {dotted} is not a known setting\.$"):
        parse_policy(shipped, "ops_policy.yaml")


def test_a_policy_error_stops_a_task_at_once():
    """A bad policy is the user's to fix: Airflow fails the task without retrying it."""
    from airflow.sdk.exceptions import AirflowFailException

    assert issubclass(PolicyError, UserError) and issubclass(PolicyError, AirflowFailException)
