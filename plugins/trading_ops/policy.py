"""The operating policy: the manual's numbers and the deployment settings, loaded from YAML and validated.

`load_policy()` reads `include/config/ops_policy.yaml`, or the file named by `TRADING_OPS_POLICY`. Any problem
raises `PolicyError` with one sentence naming the file, the key and what is wrong with it.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from trading_ops.paths import CONFIG_DIR

POLICY_ENV_VAR = "TRADING_OPS_POLICY"
DEFAULT_POLICY_PATH = CONFIG_DIR / "ops_policy.yaml"

_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


class PolicyError(ValueError):
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
Cron = Annotated[str, Field(pattern=r"^\S+ \S+ \S+ \S+ \S+$")]
IncidentLevelName = Literal["P1", "P2", "P3"]
Severity = Literal["critical", "warning", "info"]

SEVERITY_TO_LEVEL: dict[str, IncidentLevelName] = {"critical": "P1", "warning": "P2", "info": "P3"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarnCrit(Strict):
    warning: Percent
    critical: Percent

    @model_validator(mode="after")
    def _ordered(self) -> WarnCrit:
        if self.critical < self.warning:
            raise ValueError("critical must not be below warning")
        return self


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


class MetricSources(Strict):
    disk_paths: dict[str, str]
    database_conn_id: str
    prometheus_url: str | None = None
    prometheus_queries: dict[str, str] = {}


class Monitoring(Strict):
    system_health: SystemHealthThresholds
    application_metrics: ApplicationThresholds
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
    pagerduty_conn_id: str
    pagerduty_service: str
    group_window: Duration
    airflow_base_url: str
    default_level: IncidentLevelName
    dag_levels: dict[str, IncidentLevelName]


class Reindex(Strict):
    mode: Literal["all", "bloated"]
    bloat_threshold_percent: Percent
    min_index_size: ByteSize
    schemas: list[str] = Field(min_length=1)


class Analyze(Strict):
    verbose: bool
    schemas: list[str] = Field(min_length=1)


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


class Maintenance(Strict):
    conn_id: str
    schedule: Cron
    lock_timeout: Duration
    lock_retries: int = Field(ge=0)
    retry_backoff: Duration
    statement_timeout: Duration
    reindex: Reindex
    analyze: Analyze
    archive: Archive


class BackupSchedule(Strict):
    schedule: Cron
    retention: Duration
    type: Literal["snapshot", "wal"]


class TransactionLogs(Strict):
    archive: bool
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
    full: BackupSchedule
    incremental: BackupSchedule
    transaction_logs: TransactionLogs
    compression: Literal["zstd", "gzip", "none"]
    compression_level: int = Field(ge=0, le=19)
    dump_jobs: int = Field(ge=1)
    encryption: BackupEncryption
    stale_after: StaleAfter


class Restore(Strict):
    conn_id: str
    kubernetes_conn_id: str
    keep_replaced_database: Duration
    scale_down_timeout: Duration
    scale_up_timeout: Duration
    connection_drain_timeout: Duration


class LogPath(Strict):
    directory: str
    pattern: str
    method: Literal["rename", "copytruncate"]
    reopen_command: str | None = None


class LogClass(Strict):
    retention: Duration
    max_size: ByteSize
    compression: bool
    encryption: bool
    retention_wins_over_cap: bool = True
    paths: list[LogPath] = Field(min_length=1)


class Logs(Strict):
    schedule: Cron
    classes: dict[str, LogClass] = Field(min_length=1)
    rotate_after: Duration
    rotate_over_size: ByteSize
    compressor: Literal["zstd", "gzip"]
    encryption_key_conn_id: str
    alert_at_cap_fraction: float = Field(gt=0, le=1)


class SshAccess(Strict):
    role: str
    auth: list[str] = Field(min_length=1)
    restrictions: list[str] = []


class KubernetesAccess(Strict):
    role: str
    users: list[str] = Field(min_length=1)
    namespaces: list[str] | None = None


class AccessControl(Strict):
    ssh_access: list[SshAccess]
    kubernetes: list[KubernetesAccess]


class SecurityCheckSets(Strict):
    daily: list[str] = Field(min_length=1)
    weekly: list[str] = Field(min_length=1)
    monthly: list[str] = Field(min_length=1)


class SecuritySchedules(Strict):
    daily: Cron
    weekly: Cron
    monthly: Cron


class Waiver(Strict):
    check: str
    subject: str
    reason: str
    expires: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


class Security(Strict):
    access_control: AccessControl
    checks: SecurityCheckSets
    schedules: SecuritySchedules
    findings_conn_id: str
    waivers: list[Waiver] = []


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
    incident_procedure: list[str]
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

    def level_for_dag(self, dag_id: str) -> IncidentLevelName:
        return self.alerting.dag_levels.get(dag_id, self.alerting.default_level)


def policy_path() -> Path:
    return Path(os.environ.get(POLICY_ENV_VAR) or DEFAULT_POLICY_PATH)


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"] if part not in ("function-after",)) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
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
