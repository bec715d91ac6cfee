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
from decimal import Decimal
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
# `prometheus_queries` keys; `alert_rules` may watch only these (tests keep the collectors to these names). Host
# metrics come one series per host (labelled with its instance); the others are one value each.
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
# Ages in seconds, measured by system_health's freshness collector from the backup repository and the WAL archive.
FRESHNESS_METRICS = {
    "full_backup": "backup_full_age_seconds",
    "wal_bundle": "backup_wal_bundle_age_seconds",
    "wal_segment": "wal_archive_age_seconds",
}
# Age of the newest passed restore drill (ops.restore_drills), and per scheduled DAG how overdue its next successful
# run is (one series per dag_id), both measured by the same collector.
DRILL_AGE_METRIC = "restore_drill_age_seconds"
# How long the oldest archived WAL file not yet in an object-store repository has waited (backup.wal_ship.offhost_lag).
OFFHOST_LAG_METRIC = "wal_offhost_lag_seconds"
DAG_RUN_OVERDUE_METRIC = "dag_run_overdue_seconds"
# 1 when the source answered, 0 when it could not be reached: a source that is down is an alert, not a skip.
SOURCE_UP_METRICS = {"postgres": "pg_up", "prometheus": "prometheus_up"}
NoData = Literal["alert", "ok", "keep_state"]


class HostQueries(Strict):
    """PromQL over node-exporter's metrics, answering one series per host (`instance`)."""

    cpu_usage_percent: str
    memory_usage_percent: str
    # $mountpoint is replaced by each disk_paths value.
    disk_usage_percent: str = Field(pattern=r"\$mountpoint")


class MetricSources(Strict):
    # prometheus: node-exporter on every host of the platform, through prometheus_conn_id; psutil: only the Airflow
    # worker that runs the task (a single-host setup), labelled source="psutil".
    host_metrics: Literal["prometheus", "psutil"]
    host_queries: HostQueries
    # name -> the mount point of a volume (node-exporter's `mountpoint` label), or with psutil a directory on it.
    disk_paths: dict[str, str]
    database_conn_id: str
    # An HTTP connection to a Prometheus-compatible query API.
    prometheus_conn_id: str
    prometheus_queries: dict[str, str] = {}
    prometheus_timeout: Duration

    def metric_names(self) -> list[str]:
        return [
            *HOST_METRICS,
            *(f"disk_usage_percent.{name}" for name in self.disk_paths),
            *POSTGRES_METRICS,
            *self.prometheus_queries,
            SOURCE_UP_METRICS["prometheus"],
            *FRESHNESS_METRICS.values(),
            DRILL_AGE_METRIC,
            OFFHOST_LAG_METRIC,
            DAG_RUN_OVERDUE_METRIC,
        ]


class FreshnessLimit(Strict):
    stale_after: Duration
    severity: Severity


class SeverityOnly(Strict):
    severity: Severity


class DagRunFreshness(Strict):
    # A DAG is stale once the run due after its newest successful scheduled run has not succeeded this long after
    # its fire time: the longest a run may take, waiting for a worker included.
    slack: Duration
    severity: Severity


class Freshness(Strict):
    """What system_health watches every run, so a paused or broken DAG cannot hide it."""

    full_backup: FreshnessLimit
    wal_bundle: FreshnessLimit
    # The newest segment in backup.wal_archive_dir: how much a point-in-time recovery would lose (RPO).
    wal_segment: FreshnessLimit
    # The newest passed restore drill, older than restore.drill.max_age (watched once a drill is recorded).
    restore_drill: SeverityOnly
    # An archived WAL file not in the object-store repository after backup.wal_ship_within: losing the database host
    # now would lose more trades than the policy allows (a repository on this host's disk is not watched).
    wal_offhost: SeverityOnly
    # Every DAG with a cron schedule (trading_ops.monitoring.dag_runs).
    dag_runs: DagRunFreshness


class Monitoring(Strict):
    threshold_for: Duration
    # What a threshold does when its metric has no value (see AlertRule.no_data).
    threshold_no_data: NoData
    # keep_state keeps a rule's state through a gap in its data this long, then alerts as `alert` does.
    keep_state_for: Duration
    # Critical thresholds page this PagerDuty service; None: thresholds go to Slack only and only alert_rules page.
    threshold_pagerduty_service: str | None = None
    system_health: SystemHealthThresholds
    application_metrics: ApplicationThresholds
    postgres: PostgresThresholds
    sources: MetricSources
    freshness: Freshness
    # The dead man's switch (trading_ops.monitoring.heartbeat): an HTTP connection holding the whole ping URL.
    heartbeat_conn_id: str
    heartbeat_timeout: Duration


class AlertRule(Strict):
    name: str
    metric: str
    operator: Literal[">", ">=", "<", "<="]
    threshold: float
    for_: Duration = Field(alias="for")
    severity: Severity
    slack_channels: list[str] = []
    pagerduty_service: str | None = None
    # Without a value for the metric: alert (after `for`, "no data for <metric>", at the rule's severity), ok (the
    # condition counts as clear: a firing rule resolves) or keep_state (as it was, for at most keep_state_for).
    no_data: NoData = "alert"


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
    # The ops state database (trading_ops.opsstate), apart from trading_db.
    state_conn_id: str
    # Where the ops state lived before it had its own database: its `ops` tables are moved once. None: nowhere.
    legacy_state_conn_id: str | None = None
    delivery_timeout: Duration
    # PagerDuty requests retried after a network error, a 5xx or a 429 (at least once: the client's own 429
    # handling would otherwise retry without end), the first wait doubling each time.
    delivery_retries: int = Field(ge=1, le=5)
    delivery_retry_wait: Duration
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


class RecoveryPoint(Strict):
    # The most committed work a disaster may cost; archive_timeout makes PostgreSQL close (and archive) a segment
    # at least that often, so it must not be longer than the target.
    target: Duration
    archive_timeout: Duration

    @model_validator(mode="after")
    def _archive_timeout_gives_the_target(self):
        if self.archive_timeout > self.target:
            raise ValueError(
                f"backup.rpo.archive_timeout {self.archive_timeout} is longer than the RPO target {self.target}"
            )
        return self


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
    rpo: RecoveryPoint
    # The `aws` connection of an object-storage repository (credentials, endpoint_url and region_name in extra).
    repository_conn_id: str = "aws_backup"
    # Archived WAL reaches an object-storage repository within this long (the off-host recovery point).
    wal_ship_within: Duration = timedelta(minutes=5)
    multipart_chunk: ByteSize = 64 * 1024 * 1024


class ServerFreeSpace(Strict):
    # PromQL answering the bytes free on the database server's data volume (node_exporter's
    # node_filesystem_avail_bytes), asked through monitoring.sources.prometheus_conn_id.
    prometheus_query: str | None = None
    # The bytes the deployment keeps free there for a staging copy, used when no metric answers; null: unknown.
    known_free: ByteSize | None = None


class RestoreDrill(Strict):
    """db_restore_drill: the weekly proof that the newest full backup and its WAL restore."""

    # No drill passed for longer than this: an alert (a backup nobody has restored is not known to restore).
    max_age: Duration
    # A drill slower than this alerts: the restore it rehearses must fit inside the P1 resolution time.
    rto_budget: Duration
    # How long marking the recovery target may wait for the SHARE locks on the live tables (it never queues the
    # trading writers behind it for longer).
    lock_timeout: Duration
    # How long the drill waits for a first usable full backup when there is none (db_backup_full's run still going).
    backup_wait: Duration


class RestoreApproval(Strict):
    required: bool
    # Airflow user ids (the auth manager's `get_id()`) who may approve a live restore; never the run's own trigger.
    approvers: list[str]
    timeout: Duration

    @model_validator(mode="after")
    def _someone_can_approve(self) -> RestoreApproval:
        if self.required and not self.approvers:
            raise ValueError("approvers is empty while required is true: name the Airflow users who may approve")
        if len(set(self.approvers)) != len(self.approvers):
            raise ValueError("approvers lists a user twice")
        return self


class Restore(Strict):
    conn_id: str
    keep_replaced_database: Duration
    scale_down_timeout: Duration
    scale_up_timeout: Duration
    connection_drain_timeout: Duration
    # How long a point-in-time recovery instance may take to replay to its target.
    recovery_timeout: Duration
    server_free_space: ServerFreeSpace = ServerFreeSpace()
    drill: RestoreDrill
    approval: RestoreApproval


class LogPath(Strict):
    directory: str
    pattern: str
    method: Literal["rename", "copytruncate"]
    # How the writer is told to reopen after a rename: a signal to the pid in `pidfile`, or a command (no shell).
    reopen_command: str | None = None
    pidfile: str | None = None
    reopen_signal: Literal["HUP", "USR1", "USR2"] = "HUP"
    # The host the directory lives on; its rotation task runs on the Celery queue of that name ("default": the
    # default queue, so a single-host setup needs nothing here).
    host: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

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


class LogChain(Strict):
    # Ed25519: the connection's password holds the private key; the public key (base64, 32 bytes) verifies.
    signing_key_conn_id: str
    public_key: str


class Logs(Strict):
    classes: dict[str, LogClass] = Field(min_length=1)
    rotate_after: Duration
    rotate_over_size: ByteSize
    compressor: Literal["zstd", "gzip"]
    compression_level: CompressionLevels
    encryption_key_conn_id: str
    alert_at_cap_fraction: float = Field(gt=0, le=1)
    reopen_timeout: Duration
    chain: LogChain


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
    # The ops state database's schema, which its migrations create (trading_ops.opsstate).
    findings_schema: Literal["ops"]
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


_QUANTITY_SUFFIXES = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes resource quantity ("500m", "2Gi", "1.5", "1e3") as a number: CPUs or bytes."""
    match = re.fullmatch(
        r"([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)(?:([eE][+-]?\d+)|(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?)", str(value)
    )
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity like 500m, 1, 2Gi or 512Mi")
    number = Decimal(match[1] + (match[2] or ""))
    return number * _QUANTITY_SUFFIXES[match[3] or ""]


def _quantity(value: object) -> str:
    parse_quantity(value)
    return str(value)


Quantity = Annotated[str, BeforeValidator(_quantity)]
ConnId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]


class CacheEntry(Strict):
    ttl: Duration
    max_size: ByteSize
    eviction: Literal["LRU", "LFU", "FIFO"]
    # The Redis server holding this cache: an Airflow connection (type redis: host, port, password, extra {"db": 0,
    # "ssl": true}); the capacity review checks and sets its maxmemory and maxmemory-policy.
    redis_conn_id: ConnId
    # The cache's keys start with this; the TTL sample scans only them. Empty: every key of the database.
    key_prefix: str = ""

    @field_validator("ttl")
    @classmethod
    def _expires(cls, ttl: timedelta) -> timedelta:
        if ttl <= timedelta(0):
            raise ValueError("must be longer than 0s: a cache entry without expiry is not what the manual sets")
        return ttl

    @field_validator("max_size")
    @classmethod
    def _bounded(cls, size: int) -> int:
        if size <= 0:
            raise ValueError("must be above 0 (Redis reads maxmemory 0 as no limit at all)")
        return size


def _one_server_per_cache(caches: dict[str, CacheEntry]) -> dict[str, CacheEntry]:
    # maxmemory and maxmemory-policy belong to a whole Redis server: two caches on one server cannot both get theirs.
    owners: dict[str, str] = {}
    for name, entry in caches.items():
        if entry.redis_conn_id in owners:
            raise ValueError(
                f"{owners[entry.redis_conn_id]} and {name} share the Redis connection {entry.redis_conn_id}, but "
                "maxmemory and maxmemory-policy are per server: give each cache its own Redis server"
            )
        owners[entry.redis_conn_id] = name
    return caches


def _whole_percent(value: float) -> float:
    if value != int(value) or value <= 0:
        raise ValueError("must be a whole percentage above 0: the HPA's averageUtilization is an integer")
    return value


class Autoscaling(Strict):
    cpu_target: Annotated[Percent, AfterValidator(_whole_percent)]
    memory_target: Annotated[Percent, AfterValidator(_whole_percent)]
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must not be below min_replicas")
        return self


class PodResourceAmounts(Strict):
    cpu: Quantity
    memory: Quantity


class PodResources(Strict):
    requests: PodResourceAmounts
    limits: PodResourceAmounts

    @model_validator(mode="after")
    def _requests_within_limits(self) -> PodResources:
        for resource in ("cpu", "memory"):
            request, limit = getattr(self.requests, resource), getattr(self.limits, resource)
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"requests.{resource} {request} is above limits.{resource} {limit}")
        return self


class Resources(Strict):
    autoscaling: Autoscaling
    pod_resources: PodResources


class Capacity(Strict):
    """What capacity_review needs besides the manual's numbers (cache, resources) and the workload (kubernetes)."""

    # The HorizontalPodAutoscaler of kubernetes.deployment, and the Deployment's container that pod_resources sets.
    hpa: str
    container: str
    # The HPA at maxReplicas for longer than this is out of room (a warning).
    at_max_replicas_for: Duration
    # OOM kills and evictions that ended inside this window before the run are reported.
    pod_events_window: Duration
    # Keys read per cache (SCAN under the key prefix, then PTTL each), and SCAN calls at most.
    ttl_sample_keys: int = Field(ge=1, le=10_000)
    max_scan_calls: int = Field(ge=1)
    redis_timeout: Duration
    # Deliberate differences: findings of `check` with this `subject` are recorded as waived, not alerted.
    waivers: list[Waiver] = []
    # Reviews that cannot run where this policy is used (a developer machine has no Kubernetes), with what each
    # needs: their task is skipped with that sentence. Never in production, where an unreadable source must fail.
    disabled_reviews: dict[Literal["workload", "caches"], Annotated[str, Field(min_length=1)]] = {}


# incident_response asks one acknowledge step per role of a chain, then the whole chain: a DAG file cannot read
# the policy while parsing, so the number of steps is this constant and a longer chain is refused here.
MAX_ESCALATION_ROLES = 4


class Incidents(Strict):
    """Incidents (trading_ops.incidents): who the escalation chains' roles are, and how often a status is due."""

    # Role of incident_levels.*.escalation -> Airflow user ids (the auth manager's `get_id()`) asked at that step.
    roles: dict[str, Annotated[list[str], Field(min_length=1)]] = Field(min_length=1)
    # The owner is asked for a status report this often until the incident is resolved (or at the time the last
    # report named).
    status_report_every: Duration


class KubernetesWorkload(Strict):
    conn_id: str
    namespace: str
    deployment: str
    label_selector: str = Field(pattern=r"^[\w./-]+=[\w.-]+$")


class OpsPage(Strict):
    """The Ops page in the Airflow UI (the ops_page plugin): how much history it shows."""

    # Restore drills listed (and drawn in the RTO trend), newest first.
    drills_shown: int = Field(ge=1, le=200)
    # Runs per security or capacity check whose new / persisting / resolved / waived counts are shown.
    check_runs_shown: int = Field(ge=1, le=50)
    # A waiver that expires within this is listed as expiring soon: its finding will alert again.
    waiver_expiry_warning: Duration


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
    cache: Annotated[dict[str, CacheEntry], AfterValidator(_one_server_per_cache)]
    resources: Resources
    kubernetes: KubernetesWorkload
    capacity: Capacity
    incidents: Incidents
    ops_page: OpsPage

    @model_validator(mode="after")
    def _every_level_defined(self) -> Policy:
        missing = {"P1", "P2", "P3"} - set(self.incident_levels)
        if missing:
            raise ValueError(f"incident_levels lacks {', '.join(sorted(missing))}")
        return self

    @model_validator(mode="after")
    def _drill_budget_fits_p1(self) -> Policy:
        # The drill rehearses the restore of a P1 incident: a budget the incident's resolution time cannot hold
        # would let a too-slow restore pass as fine.
        resolve = self.incident_levels["P1"].resolve_within
        if self.restore.drill.rto_budget >= resolve:
            raise ValueError(
                f"restore.drill.rto_budget ({self.restore.drill.rto_budget}) must be shorter than the P1 "
                f"resolve_within ({resolve}), which the whole incident must fit in"
            )
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

    @model_validator(mode="after")
    def _capacity_waivers_name_checks(self) -> Policy:
        # A waiver naming no check would waive nothing, silently.
        checks = capacity_checks(self)
        for index, waiver in enumerate(self.capacity.waivers):
            if waiver.check not in checks:
                raise ValueError(
                    f"capacity.waivers.{index} names the check {waiver.check!r}; the capacity checks are "
                    f"{', '.join(checks)}"
                )
        return self

    @model_validator(mode="after")
    def _escalation_roles_mapped(self) -> Policy:
        # An unmapped role would be an acknowledge step nobody can answer; a mapped role no chain names, a typo.
        chained = set()
        for name, level in self.incident_levels.items():
            if len(level.escalation) > MAX_ESCALATION_ROLES:
                raise ValueError(
                    f"incident_levels.{name}.escalation has {len(level.escalation)} roles; incident_response asks "
                    f"at most {MAX_ESCALATION_ROLES}"
                )
            for role in level.escalation:
                if role not in self.incidents.roles:
                    raise ValueError(
                        f"incident_levels.{name}.escalation names {role!r}, which incidents.roles does not map to "
                        "an Airflow user"
                    )
                chained.add(role)
        unused = sorted(set(self.incidents.roles) - chained)
        if unused:
            raise ValueError(f"incidents.roles maps {', '.join(unused)}, which no escalation chain names")
        return self

    def level_for_dag(self, dag_id: str) -> IncidentLevelName:
        return self.alerting.dag_levels.get(dag_id, self.alerting.default_level)


WORKLOAD_CHECK = "capacity_workload"


def cache_check(name: str) -> str:
    """The findings history's check name of one cache's review."""
    return f"capacity_cache_{name}"


def capacity_checks(policy: Policy) -> list[str]:
    return [WORKLOAD_CHECK, *(cache_check(name) for name in policy.cache)]


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
