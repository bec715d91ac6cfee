"""The local environment: a PostgreSQL cluster with demo data and Airflow standalone, for `make up` and the e2e tests.

    python -m trading_ops.devenv up     # start (or reuse) everything under .local/, print the URL and login
    python -m trading_ops.devenv down   # stop what `up` started

Both the `make up` command and the end-to-end tests use `AirflowStandalone` and `write_local_policy` from here, so
the tests exercise the same start-up a person gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from trading_ops.localpg import LocalCluster, free_port, server_user_can_reach
from trading_ops.paths import CONFIG_DIR, PROJECT_ROOT

ADMIN_USER = "admin"
LOCAL_DIR = PROJECT_ROOT / ".local"


def write_local_policy(
    dest: Path, root: Path, *, wal_archive_dir: Path, airflow_url: str, postgres: LocalCluster | None = None
) -> Path:
    """Copy the shipped policy with every path moved under `root`, so nothing outside it is read or written; with
    `postgres`, the security checks look at that cluster and this Airflow instead of the production hosts."""
    policy = yaml.safe_load((CONFIG_DIR / "ops_policy.yaml").read_text())
    policy["backup"]["repository"] = str(root / "backups")
    policy["backup"]["wal_archive_dir"] = str(wal_archive_dir)
    policy["monitoring"]["sources"]["disk_paths"] = {"data": str(root), "backup": str(root / "backups")}
    policy["alerting"]["airflow_base_url"] = airflow_url
    for name, log_class in policy["logs"]["classes"].items():
        for index, path in enumerate(log_class["paths"]):
            path["directory"] = str(root / "logs" / name / str(index))
    if postgres is not None:
        _point_security_checks_at(policy["security"], postgres, airflow_url)
    (root / "backups").mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(policy, sort_keys=False))
    return dest


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


def venv_bin() -> Path:
    return Path(sys.executable).parent


@dataclass
class AirflowStandalone:
    """`airflow standalone` (LocalExecutor, parallelism 4) on 127.0.0.1 with a fixed admin password."""

    home: Path
    metadata_db_uri: str
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                # Every component is started as `airflow ...` by name: without the venv's bin first they die.
                "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_db_uri,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, log_file: Path, timeout: float = 300) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        # The simple auth manager keeps a password it finds in this file, which is how the login stays fixed.
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({ADMIN_USER: self.password}))
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen(
                [str(venv_bin() / "airflow"), "standalone"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_healthy(timeout, log_file)

    def wait_healthy(self, timeout: float, log_file: Path | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = log_file.read_text()[-3000:] if log_file else ""
                raise RuntimeError(f"airflow standalone exited with {self.process.returncode}:\n{tail}")
            try:
                health = self.request("GET", "/api/v2/monitor/health", auth=False)
                if all(
                    health.get(component, {}).get("status") == "healthy"
                    for component in ("metadatabase", "scheduler", "dag_processor", "triggerer")
                ):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow at {self.url} was not healthy after {timeout:.0f} s")

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        stop_process_group(self.process.pid, timeout)

    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            reply = self.request("POST", "/auth/token", {"username": ADMIN_USER, "password": self.password}, auth=False)
            self._token = reply["access_token"]
        return self._token

    def request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} did not appear in {timeout:.0f} s")

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        """Unpause the DAG and start a manual run with `conf`; returns the run id."""
        self.wait_for_dag(dag_id)
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run_id = run_id or f"e2e__{dag_id}__{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
        self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "dag_run_id": run_id, "conf": conf or {}}
        )
        return run_id

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish in {timeout:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, str]:
        reply = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti["state"]
            for ti in reply["task_instances"]
        }


def stop_process_group(pid: int, timeout: float = 30) -> None:
    """SIGTERM the process group (standalone and its components), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


# --- make up / make down -------------------------------------------------------------------------------------


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


def up() -> None:
    LOCAL_DIR.mkdir(exist_ok=True)
    LOCAL_DIR.chmod(0o755)
    state = _load_state()
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

        from trading_ops.demo_data import create_schema, load_demo_data

        cluster.create_database("trading_db")
        cluster.create_database("airflow")
        with psycopg.connect(cluster.conninfo("trading_db")) as conn:
            create_schema(conn)
            rows = load_demo_data(conn, end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
        print(f"trading_db loaded with {rows} market_data rows over the last 12 months.")

    airflow = AirflowStandalone(
        home=LOCAL_DIR / "airflow",
        metadata_db_uri=cluster.uri("airflow", scheme="postgresql+psycopg"),
        api_port=int(state.get("api_port") or os.environ.get("AIRFLOW_PORT", "8080")),
        password=state.get("admin_password") or secrets.token_urlsafe(12),
    )
    login = f"Airflow UI: {airflow.url}\nLogin:      {ADMIN_USER} / {airflow.password}"
    if state.get("airflow_pid") and _alive(state["airflow_pid"]):
        print(f"Already running.\n{login}")
        return
    policy = write_local_policy(
        LOCAL_DIR / "ops_policy.yaml",
        LOCAL_DIR,
        wal_archive_dir=cluster.wal_archive_dir,
        airflow_url=airflow.url,
        postgres=cluster,
    )
    airflow.extra_env = {"TRADING_OPS_POLICY": str(policy), "AIRFLOW_CONN_TRADING_DB": cluster.uri("trading_db")}
    state.update(api_port=airflow.api_port, admin_password=airflow.password)
    _save_state(state)
    print(f"Starting Airflow on {airflow.url} (log: {LOCAL_DIR / 'airflow.log'}) ...")
    airflow.start(LOCAL_DIR / "airflow.log")
    state["airflow_pid"] = airflow.process.pid
    _save_state(state)
    print(
        f"\n{login}\ntrading_db: postgresql://{cluster.superuser}@127.0.0.1:{cluster.port}/trading_db "
        f"(password in {LOCAL_DIR / 'state.json'})\nStop with:  make down"
    )


def down() -> None:
    state = _load_state()
    if not state:
        print("Nothing to stop.")
        return
    if state.get("airflow_pid") and _alive(state["airflow_pid"]):
        stop_process_group(state["airflow_pid"])
        print("Airflow stopped.")
    state.pop("airflow_pid", None)
    _save_state(state)
    cluster = LocalCluster(_cluster_base(), port=state["port"], password=state["password"])
    cluster.stop()
    print("PostgreSQL stopped (data kept in .local/; delete it for a fresh start).")


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


if __name__ == "__main__":
    commands = {"up": up, "down": down}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python -m trading_ops.devenv up|down")
    commands[sys.argv[1]]()
