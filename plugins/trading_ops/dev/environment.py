"""`make up`, `make down` and `make alerts`: a working system on this machine, everything under `.local/`.

`up` starts (or reuses) a PostgreSQL cluster with the demo data, one redis-server per cache of the policy (for
capacity_review), the local alert sink and Airflow standalone;
unpauses every DAG; and takes a first full backup through the REST API (unless a verified one exists), so a
restore can be tried at once. `down` stops what `up` started and keeps the data. `alerts` prints what the DAGs
sent to Slack and PagerDuty.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from trading_ops.dev.alert_sink import ENDPOINTS_FILE, SinkEndpoints, format_alert, read_alerts
from trading_ops.dev.local_policy import local_log_signing_key, write_local_policy
from trading_ops.dev.localpg import LocalCluster, free_port, server_user_can_reach
from trading_ops.dev.localredis import LocalRedis
from trading_ops.dev.standalone import ADMIN_USER, APPROVER_USER, AirflowStandalone, stop_process_group
from trading_ops.paths import PROJECT_ROOT

LOCAL_DIR = PROJECT_ROOT / ".local"
DAG_IDS = sorted(path.stem for path in (PROJECT_ROOT / "dags").glob("*.py"))
FIRST_BACKUP_TIMEOUT = 900
# What system_health measures here, said where `make up` ends (the local policy sets host_metrics: psutil).
MONITORING_SOURCES = (
    'Monitoring: host metrics from this machine (psutil, labelled source="psutil"; production uses node-exporter '
    "through Prometheus). No Prometheus runs here: system_health's prometheus_down rule alerts until "
    "AIRFLOW_CONN_PROMETHEUS points at one."
)
# The ops state database (trading_ops.opsstate) of the `ops_state` connection.
OPS_STATE_DB = "trading_ops"


def _cluster_base() -> Path:
    """`.local/pg`, or a /var/tmp directory linked from there when the postgres user cannot enter the checkout."""
    link = LOCAL_DIR / "pg"
    if link.is_symlink() or link.exists():
        return link.resolve()
    if server_user_can_reach(LOCAL_DIR):
        return link
    fallback = Path("/var/tmp") / f"trading-ops-{hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:12]}"
    fallback.mkdir(parents=True, exist_ok=True)
    fallback.chmod(0o755)
    link.symlink_to(fallback / "pg")
    return fallback / "pg"


def _load_state() -> dict:
    state_file = LOCAL_DIR / "state.json"
    return json.loads(state_file.read_text()) if state_file.exists() else {}


def _save_state(state: dict) -> None:
    state_file = LOCAL_DIR / "state.json"
    state_file.write_text(json.dumps(state))
    state_file.chmod(0o600)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _start_postgres(state: dict) -> LocalCluster:
    cluster = LocalCluster(
        _cluster_base(), port=state.get("port") or free_port(5433), **({"password": state["password"]} if state else {})
    )
    state.update(port=cluster.port, password=cluster.password)
    _save_state(state)
    fresh = not cluster.data_dir.exists()
    if fresh:
        print(f"Creating a PostgreSQL cluster in {cluster.base_dir} ...")
        cluster.init()
    if not cluster.is_running():
        cluster.start()
    if fresh:
        import psycopg

        from trading_ops.dev.demo_data import create_schema, load_demo_data

        cluster.create_database("trading_db")
        cluster.create_database("airflow")
        with psycopg.connect(cluster.conninfo("trading_db")) as conn:
            create_schema(conn)
            rows = load_demo_data(conn, end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
        print(f"trading_db loaded with {rows} market_data rows over the last 12 months.")
    if not cluster.database_exists(OPS_STATE_DB):
        # Beside trading_db, not in it: its backups must not carry the alert and findings history.
        cluster.create_database(OPS_STATE_DB)
    return cluster


def _local_caches(state: dict) -> dict[str, LocalRedis]:
    """One redis-server per cache of the shipped policy under .local/redis/, keeping its port and password."""
    from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy

    known = state.setdefault("redis", {})
    servers = {}
    for name, entry in load_policy(DEFAULT_POLICY_PATH).cache.items():
        saved = known.get(name, {})
        server = LocalRedis(LOCAL_DIR / "redis" / name, **saved)
        known[name] = {"port": server.port, "password": server.password}
        servers[entry.redis_conn_id] = server
    _save_state(state)
    return servers


def _start_caches(state: dict) -> dict[str, str]:
    """The caches' redis-servers running; their AIRFLOW_CONN_ variables."""
    env = {}
    for conn_id, server in _local_caches(state).items():
        if not server.is_running():
            server.start()
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = server.connection_json()
    return env


def _start_alert_sink(state: dict, timeout: float = 30) -> SinkEndpoints:
    """A fresh sink process; it writes where it listens once it accepts connections."""
    if _alive(state.get("alert_sink_pid")):
        stop_process_group(state["alert_sink_pid"])
    (LOCAL_DIR / ENDPOINTS_FILE).unlink(missing_ok=True)
    with open(LOCAL_DIR / "alert-sink.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trading_ops.dev", "alert-sink", str(LOCAL_DIR)],
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins")},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state["alert_sink_pid"] = process.pid
    _save_state(state)
    deadline = time.monotonic() + timeout
    while (endpoints := SinkEndpoints.read(LOCAL_DIR)) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"The alert sink did not start; see {LOCAL_DIR / 'alert-sink.log'}.")
        time.sleep(0.1)
    return endpoints


def _audit_log_recipient() -> str:
    """The age recipient audit archives are encrypted to; its identity stays in .local/ for whoever reads them."""
    from pyrage import x25519

    identity_file = LOCAL_DIR / "audit-log-identity.txt"
    if not identity_file.exists():
        identity_file.touch(0o600)
        identity_file.write_text(f"{x25519.Identity.generate()}\n")
    return str(x25519.Identity.from_str(identity_file.read_text().strip()).to_public())


def _take_first_full_backup(airflow: AirflowStandalone) -> str:
    """Trigger db_backup_full and wait for it, unless the repository already has a verified full backup."""
    from trading_ops.backup import Repository, list_backups

    repository = Repository(LOCAL_DIR / "backups")
    verified = [backup for backup in list_backups(repository, "full") if backup.verified]
    if verified:
        return f"Newest verified full backup: {verified[0].id}."
    print("Taking a first full backup (db_backup_full) ...")
    run_id = airflow.trigger("db_backup_full", {"dry_run": False}, run_id=f"make_up__{datetime.now(UTC):%Y%m%dT%H%M%S}")
    run = airflow.wait_for_run("db_backup_full", run_id, timeout=FIRST_BACKUP_TIMEOUT)
    if run["state"] != "success":
        states = airflow.task_instances("db_backup_full", run_id)
        raise SystemExit(f"The first full backup failed ({states}); see its task logs in the Airflow UI.")
    newest = list_backups(repository, "full")[0]
    return f"First full backup {newest.id} taken and verified: a restore can be tried now (db_restore)."


def up() -> None:
    LOCAL_DIR.mkdir(exist_ok=True)
    LOCAL_DIR.chmod(0o755)
    state = _load_state()
    cluster = _start_postgres(state)
    airflow = AirflowStandalone(
        home=LOCAL_DIR / "airflow",
        metadata_db_uri=cluster.uri("airflow", scheme="postgresql+psycopg"),
        api_port=int(state.get("api_port") or os.environ.get("AIRFLOW_PORT", "8080")),
        password=state.get("admin_password") or secrets.token_urlsafe(12),
        approver_password=state.get("approver_password") or secrets.token_urlsafe(12),
    )
    login = (
        f"Airflow UI: {airflow.url}\nLogin:      {ADMIN_USER} / {airflow.password}\n"
        f"Approver:   {APPROVER_USER} / {airflow.approver_password}  (a live db_restore waits for a second "
        "person: log in as the user who did not trigger it and approve it under Browse -> Required Actions)"
    )
    if _alive(state.get("airflow_pid")):
        print(f"Already running.\n{login}")
        return
    sink = _start_alert_sink(state)
    cache_connections = _start_caches(state)
    policy = write_local_policy(
        LOCAL_DIR / "ops_policy.yaml",
        LOCAL_DIR,
        wal_archive_dir=cluster.wal_archive_dir,
        airflow_url=airflow.url,
        postgres=cluster,
    )
    airflow.extra_env = {
        "TRADING_OPS_POLICY": str(policy),
        "AIRFLOW_CONN_TRADING_DB": cluster.uri("trading_db"),
        "AIRFLOW_CONN_OPS_STATE": cluster.uri(OPS_STATE_DB),
        "AIRFLOW_CONN_SLACK_ALERTS": sink.slack_connection(),
        "AIRFLOW_CONN_PAGERDUTY_EVENTS": sink.pagerduty_connection(),
        "AIRFLOW_CONN_HEARTBEAT": sink.heartbeat_connection(),
        "AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY": json.dumps(
            {"conn_type": "generic", "password": _audit_log_recipient()}
        ),
        **cache_connections,
        # The key that signs the log chains; write_local_policy put its public half in the policy.
        "AIRFLOW_CONN_AUDIT_LOG_SIGNING_KEY": json.dumps(
            {"conn_type": "generic", "password": local_log_signing_key(LOCAL_DIR)[0]}
        ),
    }
    state.update(
        api_port=airflow.api_port, admin_password=airflow.password, approver_password=airflow.approver_password
    )
    _save_state(state)
    print(f"Starting Airflow on {airflow.url} (log: {LOCAL_DIR / 'airflow.log'}) ...")
    airflow.start(LOCAL_DIR / "airflow.log")
    state["airflow_pid"] = airflow.process.pid
    _save_state(state)
    for dag_id in DAG_IDS:
        airflow.unpause(dag_id)
    print(f"Unpaused {len(DAG_IDS)} DAGs: {', '.join(DAG_IDS)}.")
    backup = _take_first_full_backup(airflow)
    print(
        f"\n{login}\ntrading_db: postgresql://{cluster.superuser}@127.0.0.1:{cluster.port}/trading_db "
        f"(password in {LOCAL_DIR / 'state.json'})\n{backup}\n"
        f"Alerts go to a local Slack/PagerDuty sink: `make alerts` prints them; system_health's heartbeat pings it too "
        f"(last ping in {LOCAL_DIR / 'heartbeat.json'}).\n{MONITORING_SOURCES}\n"
        f"The Ops page (recoverability, alerts, findings): {airflow.url}/plugin/trading-ops\nStop with:  make down"
    )


def down() -> None:
    state = _load_state()
    if not state:
        print("Nothing to stop.")
        return
    if _alive(state.get("airflow_pid")):
        stop_process_group(state["airflow_pid"])
        print("Airflow stopped.")
    if _alive(state.get("alert_sink_pid")):
        stop_process_group(state["alert_sink_pid"])
        print("Alert sink stopped.")
    state.pop("airflow_pid", None)
    state.pop("alert_sink_pid", None)
    _save_state(state)
    for server in _local_caches(state).values():
        server.stop()
    print("Cache redis-servers stopped.")
    cluster = LocalCluster(_cluster_base(), port=state["port"], password=state["password"])
    cluster.stop()
    print("PostgreSQL stopped (data kept in .local/; delete it for a fresh start).")


def alerts(directory: Path = LOCAL_DIR) -> None:
    received = read_alerts(directory)
    for alert in received:
        print(format_alert(alert))
    print(f"{len(received)} message(s) in {directory / 'alerts.jsonl'}.")
