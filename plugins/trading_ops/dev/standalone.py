"""`airflow standalone` on 127.0.0.1, driven over the REST API: what `make up` starts and the e2e tests run on.

Both use this one start-up (LocalExecutor, parallelism 4, two users of the simple auth manager with fixed
passwords), so the tests exercise what a person gets. The second user, `approver`, exists because a live restore
needs a second person's approval (policy `restore.approval`): whoever triggers it cannot approve it.
"""

from __future__ import annotations

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

from trading_ops.dev.localpg import free_port
from trading_ops.paths import PROJECT_ROOT

ADMIN_USER = "admin"
# May trigger and answer (role "user" may answer a Human-in-the-loop task); approves what the admin triggers.
APPROVER_USER = "approver"
LOCAL_USERS = (ADMIN_USER, APPROVER_USER)


def venv_bin() -> Path:
    return Path(sys.executable).parent


@dataclass
class AirflowStandalone:
    """`airflow standalone` (LocalExecutor, parallelism 4) on 127.0.0.1 with fixed passwords for its two users."""

    home: Path
    metadata_db_uri: str
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    approver_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    process: subprocess.Popen | None = None
    _tokens: dict[str, str] = field(default_factory=dict, init=False, repr=False)

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
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{APPROVER_USER}:user",
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
        # The simple auth manager keeps a password it finds in this file, which is how the logins stay fixed.
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(self.passwords()))
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

    def passwords(self) -> dict[str, str]:
        return {ADMIN_USER: self.password, APPROVER_USER: self.approver_password}

    def token(self, user: str = ADMIN_USER) -> str:
        if user not in self._tokens:
            reply = self.request(
                "POST", "/auth/token", {"username": user, "password": self.passwords()[user]}, auth=False
            )
            self._tokens[user] = reply["access_token"]
        return self._tokens[user]

    def request(
        self, method: str, path: str, body: dict | None = None, *, auth: bool = True, user: str = ADMIN_USER
    ) -> dict:
        """`method path` with JSON `body` as `user` (the admin unless said otherwise)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token(user)}"
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

    def unpause(self, dag_id: str) -> None:
        """Unpause a DAG once the DAG processor has parsed it."""
        self.wait_for_dag(dag_id)
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        """Unpause the DAG and start a manual run with `conf`; returns the run id."""
        self.unpause(dag_id)
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

    def _hitl_path(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"

    def wait_for_question(self, dag_id: str, run_id: str, task_id: str, timeout: float = 300) -> dict:
        """The Human-in-the-loop detail of `task_id` once the task is parked waiting for an answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ti = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            except urllib.error.HTTPError as exc:  # the scheduler has not created the run's task instances yet
                if exc.code != 404:
                    raise
                ti = {"state": None}
            if ti["state"] == "awaiting_input":
                # The worker reports the task parked before its process has exited; an answer in that instant
                # resumes the task while the old process still runs, and the resumed one is killed (Airflow
                # 3.3.2). A person never answers that fast: give the worker a moment, as the UI's round trip does.
                time.sleep(3)
                return self.request("GET", self._hitl_path(dag_id, run_id, task_id))
            if ti["state"] not in (None, "scheduled", "queued", "running"):
                raise RuntimeError(f"{task_id} of {run_id} ended {ti['state']} without waiting for an answer")
            time.sleep(1)
        raise TimeoutError(f"{task_id} of {run_id} never waited for an answer in {timeout:.0f} s")

    def answer(
        self, dag_id: str, run_id: str, task_id: str, option: str, user: str, params: dict | None = None
    ) -> dict:
        """Answer a waiting Human-in-the-loop task as `user` (the REST API the UI's Required Actions uses), with
        the form's `params` if it has one."""
        body = {"chosen_options": [option], "params_input": params or {}}
        return self.request("PATCH", self._hitl_path(dag_id, run_id, task_id), body, user=user)

    def answer_until_heard(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        option: str,
        user: str,
        timeout: float = 600,
        params: dict | None = None,
    ) -> dict:
        """`answer`, and the same answer again whenever the task asks anew: in Airflow 3.3.2 an answer that lands
        while the parked task's process is still alive resumes it, the resumed task is killed and retried, and the
        retry asks again with nothing changed. Returns the first reply, once the task no longer waits."""
        answered = self.answer(dag_id, run_id, task_id, option, user, params)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ti = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            if ti["state"] in ("success", "failed", "skipped", "upstream_failed"):
                return answered
            if (
                ti["state"] == "awaiting_input"
                and not self.request("GET", self._hitl_path(dag_id, run_id, task_id))["response_received"]
            ):
                time.sleep(3)
                self.answer(dag_id, run_id, task_id, option, user, params)
            time.sleep(1)
        raise TimeoutError(f"{task_id} of {run_id} still waits for an answer after {timeout:.0f} s")

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
