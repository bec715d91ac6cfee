"""The operating policy: the manual's numbers and the deployment settings, loaded from YAML and validated.

`load_policy()` reads `include/config/ops_policy.yaml`, or the file named by `TRADING_OPS_POLICY`. Any problem
raises `PolicyError` with one sentence naming the file, the key and what is wrong with it; it is a `UserError`, so
the task that loaded the policy fails at once, without retries. Every key is read by some part of the project: an
unknown key (a typo, or a setting nothing reads) is refused, never silently accepted. Schedules are not here:
Airflow reads them while parsing, when no file may be read, so each lives in its DAG file.
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trading_ops.errors import UserError
from trading_ops.paths import CONFIG_DIR
from trading_ops.security.catalog import CHECKS

POLICY_ENV_VAR = "TRADING_OPS_POLICY"
DEFAULT_POLICY_PATH = CONFIG_DIR / "ops_policy.yaml"

_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


class PolicyError(UserError):
    """The policy file is missing, unreadable or invalid."""


def parse_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 2h, 7d or 4w")
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)\s*", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size like 500MB or 10GB")
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
Percent = Annotated[float, Field(ge=0, le=100)]
IncidentLevelName = Literal["P1", "P2", "P3"]
Severity = Literal["critical", "warning", "info"]

SEVERITY_TO_LEVEL: dict[str, IncidentLevelName] = {"critical": "P1", "warning": "P2", "info": "P3"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Strict):
    warning: float = Field(ge=0)
    critical: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.critical < self.warning:
            raise ValueError("critical must not be below warning")
        return self


class WarnCrit(Limits):
    warning: Percent
    critical: Percent


class SystemHealthThresholds(Strict):
    cpu_usage: WarnCrit
    memory_usage: WarnCrit
    disk_usage: WarnCrit


class ApiLatency(Strict):
    p95_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)


class RequestRate(Strict):
    min_per_second: float = Field(ge=0)
    max_per_second: float = Field(gt=0)


class ApplicationThresholds(Strict):
    api_latency: ApiLatency
    error_rate_percent: Percent
    request_rate: RequestRate


class PostgresThresholds(Strict):
    connection_usage: WarnCrit
    replication_lag_seconds: Limits
    longest_transaction_seconds: Limits
    wal_archive_failure_severity: Severity


# The metrics system_health's collectors measure, besides `disk_usage_percent.<disk_paths key>` and the
# `prometheus_queries` keys; `alert_rules` may watch only these (tests keep the collectors to these names).
HOST_METRICS = ("cpu_usage_percent", "memory_usage_percent")
POSTGRES_METRICS = (
    "pg_up",
    "pg_connections",
    "pg_max_connections",
    "pg_connection_usage_percent",
    "pg_replicas",
    "pg_replication_lag_seconds",
    "pg_longest_transaction_seconds",
    "pg_wal_archive_failed_count",
    "pg_wal_archive_failing",
    "pg_database_size_bytes",
)


class MetricSources(Strict):
    disk_paths: dict[str, str]
    database_conn_id: str
    # An HTTP connection to a Prometheus-compatible query API; None: no application metrics.
    prometheus_conn_id: str | None = None
    prometheus_queries: dict[str, str] = {}
    prometheus_timeout: Duration

    def metric_names(self) -> list[str]:
        return [
            *HOST_METRICS,
            *(f"disk_usage_percent.{name}" for name in self.disk_paths),
            *POSTGRES_METRICS,
            *self.prometheus_queries,
        ]


class Monitoring(Strict):
    threshold_for: Duration
    # Critical thresholds page this PagerDuty service; None: thresholds go to Slack only and only alert_rules page.
    threshold_pagerduty_service: str | None = None
    system_health: SystemHealthThresholds
    application_metrics: ApplicationThresholds
    postgres: PostgresThresholds
    sources: MetricSources


class AlertRule(Strict):
    name: str
    metric: str
    operator: Literal[">", ">=", "<", "<="]
    threshold: float
    for_: Duration = Field(alias="for")
    severity: Severity
    slack_channels: list[str] = []
    pagerduty_service: str | None = None


class IncidentLevel(Strict):
    name: str
    description: str
    respond_within: Duration
    resolve_within: Duration
    escalation: list[str] = Field(min_length=1)
    procedure: str
    slack_channels: list[str] = Field(min_length=1)
    pagerduty: bool


class Alerting(Strict):
    slack_conn_id: str
    slack_channel_conn_ids: dict[str, str] = {}
    pagerduty_conn_id: str
    pagerduty_service: str
    group_window: Duration
    state_conn_id: str
    delivery_timeout: Duration
    error_lines: int = Field(ge=1)
    airflow_base_url: str
    default_level: IncidentLevelName
    dag_levels: dict[str, IncidentLevelName]


class Reindex(Strict):
    mode: Literal["all", "bloated"]
    bloat_threshold_percent: Percent
    min_index_size: ByteSize


class Analyze(Strict):
    verbose: bool


class Archive(Strict):
    source_table: str
    archive_table: str
    schema_: str = Field(alias="schema")
    time_column: str
    key_column: str
    retention_months: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    partition_strategy: Literal["detach_attach", "rows"]
    premake_partitions: int = Field(ge=0)


def _user_schema(name: str) -> str:
    if name in ("pg_catalog", "information_schema") or name.startswith(("pg_toast", "pg_temp")):
        raise ValueError(f"{name!r} is a system schema; list user schemas only, or leave the key out for all of them")
    return name


class Maintenance(Strict):
    conn_id: str
    lock_timeout: Duration
    lock_retries: int = Field(ge=0)
    retry_backoff: Duration
    statement_timeout: Duration
    # The schemas analyzed and reindexed; None: every user schema, as the manual's ANALYZE VERBOSE and REINDEX DATABASE.
    schemas: list[Annotated[str, AfterValidator(_user_schema)]] | None = Field(default=None, min_length=1)
    reindex: Reindex
    analyze: Analyze
    archive: Archive


class Retained(Strict):
    retention: Duration


class BackupEncryption(Strict):
    enabled: bool
    key_conn_id: str


class StaleAfter(Strict):
    full: Duration
    incremental: Duration


class Backup(Strict):
    conn_id: str
    repository: str
    wal_archive_dir: str
    full: Retained
    incremental: Retained
    transaction_logs: Retained
    compression: Literal["zstd", "gzip", "none"]
    compression_level: int = Field(ge=0, le=19)
    encryption: BackupEncryption
    stale_after: StaleAfter
    archive_wait: Duration
    abandoned_partial_after: Duration


class Restore(Strict):
    conn_id: str
    keep_replaced_database: Duration
    scale_down_timeout: Duration
    scale_up_timeout: Duration
    connection_drain_timeout: Duration


class LogPath(Strict):
    directory: str
    pattern: str
    method: Literal["rename", "copytruncate"]
    # How the writer is told to reopen after a rename: a signal to the pid in `pidfile`, or a command (no shell).
    reopen_command: str | None = None
    pidfile: str | None = None
    reopen_signal: Literal["HUP", "USR1", "USR2"] = "HUP"

    @model_validator(mode="after")
    def _reopen_fits_method(self) -> LogPath:
        if self.reopen_command and self.pidfile:
            raise ValueError("set reopen_command or pidfile, not both")
        if self.method == "copytruncate" and (self.reopen_command or self.pidfile):
            raise ValueError("copytruncate keeps the writer's file open: reopen_command and pidfile do not apply")
        return self


class CompressionLevels(Strict):
    zstd: int = Field(ge=1, le=22)
    gzip: int = Field(ge=1, le=9)


class LogClass(Strict):
    retention: Duration
    max_size: ByteSize
    compression: bool
    encryption: bool
    # True: archives younger than the retention are never deleted for size (a critical alert instead).
    retention_wins_over_cap: bool = False
    paths: list[LogPath] = Field(min_length=1)


class Logs(Strict):
    classes: dict[str, LogClass] = Field(min_length=1)
    rotate_after: Duration
    rotate_over_size: ByteSize
    compressor: Literal["zstd", "gzip"]
    compression_level: CompressionLevels
    encryption_key_conn_id: str
    alert_at_cap_fraction: float = Field(gt=0, le=1)
    reopen_timeout: Duration


class SshAccess(Strict):
    role: str
    # The manual's methods. auth_log_review and security_policy_review hold every ssh login to both (the second
    # factor being one of `ssh_second_factor_methods`), so any other value would be written here and checked nowhere.
    auth: list[str]
    restrictions: list[str] = []
    # The login names that hold this role on the hosts; auth_log_review checks logins and sudo against them.
    users: list[str] = []

    @field_validator("auth")
    @classmethod
    def _what_the_checks_enforce(cls, auth: list[str]) -> list[str]:
        if sorted(auth) != ["2fa", "public_key"]:
            raise ValueError("must be [public_key, 2fa]: the security checks hold every ssh login to both")
        return auth


class KubernetesAccess(Strict):
    role: str
    users: list[str] = Field(min_length=1)
    namespaces: list[str] | None = None


class AccessControl(Strict):
    ssh_access: list[SshAccess]
    kubernetes: list[KubernetesAccess]


class Waiver(Strict):
    """An accepted risk: findings of `check` with exactly this `subject` are not alerted before `expires`."""

    check: str
    subject: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    expires: date


class VulnerabilityScan(Strict):
    # Airflow connection whose host is the OSV API (https://api.osv.dev); pip-audit queries its /v1/query.
    osv_conn_id: str
    audit_environment: bool
    severity_with_fix: Severity
    severity_without_fix: Severity
    timeout: Duration


class AuthLogs(Strict):
    # Glob patterns; rotated files (.1, .gz) may be listed so that the window is covered after a rotation.
    ssh_paths: list[str] = Field(min_length=1)
    postgres_paths: list[str] = Field(min_length=1)
    window: Duration
    postgres_allowed_methods: list[str] = Field(min_length=1)


class CountThresholds(Strict):
    warning: int = Field(ge=1)
    critical: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> CountThresholds:
        if self.critical < self.warning:
            raise ValueError("critical must not be below warning")
        return self


class FailedLogins(Strict):
    window: Duration
    per_source: CountThresholds
    per_user: CountThresholds
    # One source failing as this many distinct users is a brute-force pattern (critical).
    brute_force_users_per_source: int = Field(ge=2)


class DependencyUpdates(Strict):
    # Airflow connection whose host serves the PyPI JSON API (GET /pypi/<name>/json).
    package_index_conn_id: str
    timeout: Duration


class TlsEndpoint(Strict):
    host: str
    port: int = Field(ge=1, le=65535)
    starttls: Literal["postgres"] | None = None


class Tls(Strict):
    warning_days: int = Field(ge=1)
    critical_days: int = Field(ge=0)
    min_version: Literal["TLSv1.2", "TLSv1.3"]
    # PEM bundle of trusted CAs; null uses the system trust store.
    ca_file: str | None = None
    timeout: Duration
    endpoints: list[TlsEndpoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Tls:
        if self.critical_days > self.warning_days:
            raise ValueError("critical_days must not be above warning_days")
        return self


class FirewallRule(Strict):
    protocol: Literal["tcp", "udp"]
    port: int = Field(ge=1, le=65535)
    # A CIDR; "any" for an allow from every address.
    source: str


class Firewall(Strict):
    # Prints the host's rules; runs on the worker (prefix with ssh for another host).
    command: list[str] = Field(min_length=1)
    format: Literal["nft-json", "iptables-save"]
    timeout: Duration
    # Ports whose any-source allow is critical, with what they serve.
    protected_ports: dict[int, str] = Field(min_length=1)
    baseline: list[FirewallRule]
    # NetworkPolicies that must exist in the workload's namespace (kubernetes.namespace).
    network_policies: list[str]


class PostgresCredential(Strict):
    user: str
    password: str


class PentestTarget(Strict):
    host: str
    allowed_ports: list[int] = Field(min_length=1)
    postgres_ports: list[int] = []
    tls_ports: list[int] = []


class PenetrationTest(Strict):
    targets: list[PentestTarget] = Field(min_length=1)
    probe_ports: list[int] = Field(min_length=1)
    timeout: Duration
    default_credentials: list[PostgresCredential] = Field(min_length=1)
    airflow_api_urls: list[str] = []


class PolicyReview(Strict):
    # Settings of the postgres_conn_id server and their required values as pg_settings shows them.
    postgres_settings: dict[str, str] = Field(min_length=1)
    # Prints the effective sshd configuration (`sshd -T`), or the config file (`cat /etc/ssh/sshd_config`).
    sshd_command: list[str] = Field(min_length=1)
    sshd_command_timeout: Duration
    airflow_min_secret_length: int = Field(ge=1)
    airflow_weak_secrets: list[str]


class PostgresAccess(Strict):
    superusers: list[str] = Field(min_length=1)
    login_roles: list[str] = Field(min_length=1)
    # role -> roles it may be a member of
    memberships: dict[str, list[str]] = {}
    # role -> privileges it may hold on the tables of `schemas`; owners are exempt.
    table_privileges: dict[str, list[str]] = {}
    schemas: list[str] = Field(min_length=1)


class AccessAudit(Strict):
    postgres: PostgresAccess
    # Built-in Kubernetes subjects (system:masters, system:kube-scheduler ...) are the cluster's own.
    kubernetes_ignored_subject_prefixes: list[str] = []
    kubernetes_ignored_namespaces: list[str] = []


class Security(Strict):
    access_control: AccessControl
    findings_conn_id: str
    findings_schema: str
    # The PostgreSQL server whose settings, pg_hba rules, roles and grants are reviewed.
    postgres_conn_id: str
    waivers: list[Waiver] = []
    # Checks that cannot work where this policy is used (a developer machine has no sshd log, no Kubernetes):
    # check -> what it needs. Their tasks are skipped with that sentence and the run summary lists them; never set
    # in production, where a check that cannot read its source must fail.
    disabled_checks: dict[str, Annotated[str, Field(min_length=1)]] = {}
    # Pinned requirement files (relative to the project root) audited and compared with the package index.
    requirement_files: list[str] = Field(min_length=1)
    # sshd authentication methods that count as the manual's second factor (2fa), next to publickey.
    ssh_second_factor_methods: list[str] = Field(min_length=1)
    vulnerability_scan: VulnerabilityScan
    auth_logs: AuthLogs
    failed_logins: FailedLogins
    dependency_updates: DependencyUpdates
    tls: Tls
    firewall: Firewall
    penetration_test: PenetrationTest
    policy_review: PolicyReview
    access_audit: AccessAudit

    @model_validator(mode="after")
    def _disabled_checks_exist(self) -> Security:
        unknown = set(self.disabled_checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"disabled_checks names {', '.join(sorted(unknown))}, which is not one of the checks")
        return self


class CacheEntry(Strict):
    ttl: Duration
    max_size: ByteSize
    eviction: Literal["LRU", "LFU", "FIFO"]


class Autoscaling(Strict):
    cpu_target: Percent
    memory_target: Percent
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)


class PodResourceAmounts(Strict):
    cpu: str
    memory: str


class PodResources(Strict):
    requests: PodResourceAmounts
    limits: PodResourceAmounts


class Resources(Strict):
    autoscaling: Autoscaling
    pod_resources: PodResources


class KubernetesWorkload(Strict):
    conn_id: str
    namespace: str
    deployment: str
    label_selector: str = Field(pattern=r"^[\w./-]+=[\w.-]+$")


class Policy(Strict):
    version: Literal[1]
    timezone: str
    monitoring: Monitoring
    alert_rules: list[AlertRule]
    incident_levels: dict[IncidentLevelName, IncidentLevel]
    alerting: Alerting
    maintenance: Maintenance
    backup: Backup
    restore: Restore
    logs: Logs
    security: Security
    cache: dict[str, CacheEntry]
    resources: Resources
    kubernetes: KubernetesWorkload

    @model_validator(mode="after")
    def _every_level_defined(self) -> Policy:
        missing = {"P1", "P2", "P3"} - set(self.incident_levels)
        if missing:
            raise ValueError(f"incident_levels lacks {', '.join(sorted(missing))}")
        return self

    @model_validator(mode="after")
    def _alert_rules_watch_measured_metrics(self) -> Policy:
        # A rule on a metric nobody measures would never fire, silently.
        known = self.monitoring.sources.metric_names()
        for index, rule in enumerate(self.alert_rules):
            if rule.metric not in known:
                raise ValueError(
                    f"alert_rules.{index} ({rule.name}) watches {rule.metric!r}, which system_health does not "
                    f"measure; use one of {', '.join(known)}"
                )
        return self

    def level_for_dag(self, dag_id: str) -> IncidentLevelName:
        return self.alerting.dag_levels.get(dag_id, self.alerting.default_level)


def policy_path() -> Path:
    return Path(os.environ.get(POLICY_ENV_VAR) or DEFAULT_POLICY_PATH)


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"] if part not in ("function-after",))
    message = error["msg"].removeprefix("Value error, ")
    if not key:
        # A check across sections names its keys itself.
        return message
    if error["type"] == "extra_forbidden":
        message = "is not a known setting"
    elif error["type"] == "missing":
        message = "is required but missing"
    return f"{key} {message}" if error["type"] in ("extra_forbidden", "missing") else f"{key}: {message}"


def parse_policy(data: object, source: str = "<policy>") -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"Policy {source} is invalid: {_describe(exc.errors()[0])}.") from None


_cache: dict[tuple[str, float], Policy] = {}


def load_policy(path: str | os.PathLike | None = None) -> Policy:
    """Load and validate the policy; cached per file and modification time."""
    path = Path(path) if path else policy_path()
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise PolicyError(f"Policy file {path} cannot be read: {exc.strerror}.") from None
    key = (str(path), mtime)
    if key not in _cache:
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise PolicyError(f"Policy file {path} is not valid YAML: {exc}.") from None
        _cache[key] = parse_policy(data, str(path))
    return _cache[key]
