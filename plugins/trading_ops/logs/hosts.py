"""Which host each log path lives on, which task rotates it there, and which hosts a run did not reach.

Each path of the policy names its `host` ("default" unless set). The DAG has one mapped rotation task per host,
on the Celery queue of that host's name, so only the worker started on that host (`airflow celery worker
--queues <host>`, with `TRADING_OPS_HOST=<host>` in its environment) runs it; the "default" host's task keeps the
default queue and its old id, so a single-host setup sees no change. Airflow fixes a task instance's queue when it
creates it, from the task, so a queue cannot vary between the map indexes of one task: hence a task per host.

The hosts the DAG builds tasks for are read while the file is parsed, from the environment (no file is read then):
`TRADING_OPS_LOG_HOSTS`, comma-separated, set where the workers are defined (docker-compose.yaml); unset, the
single host "default". A host the policy names but the DAG does not know is reported, never skipped silently.

A worker that does not answer leaves its host's task queued; the scheduler fails it after
`[scheduler] task_queued_timeout` and its requeues (`num_stuck_in_queued_retries`). The report task runs once
every host task is done, whatever their state (trigger rule all_done), and names every host whose task did not
succeed without ever starting (no start recorded: no worker took it), with an alert (critical for a host holding an
encrypted class), and fails, so the run is failed too: a task that started and failed alerts by itself already.
"""

from __future__ import annotations

import os
import re

from trading_ops.policy import Policy

DEFAULT_HOST = "default"
HOSTS_ENV = "TRADING_OPS_LOG_HOSTS"
WORKER_HOST_ENV = "TRADING_OPS_HOST"
ROTATE_TASK = "rotate_log_class"
LIST_TASK = "list_log_classes"
STARTED_KEY = "started_on"
# upstream_failed: the class list failed, which alerts by itself; no host is to blame.
NOT_A_HOST_PROBLEM = {"success", "skipped", "upstream_failed"}


def log_hosts() -> list[str]:
    """The hosts the DAG makes rotation tasks for (parse time: the environment only)."""
    hosts = [host.strip() for host in os.environ.get(HOSTS_ENV, "").split(",") if host.strip()]
    return hosts or [DEFAULT_HOST]


def _task_suffix(host: str) -> str:
    # Task ids here are letters, digits and underscores; host names may hold - and . too.
    return "" if host == DEFAULT_HOST else "_" + re.sub(r"[^A-Za-z0-9_]", "_", host)


def rotate_task_id(host: str) -> str:
    return ROTATE_TASK + _task_suffix(host)


def list_task_id(host: str) -> str:
    return LIST_TASK + _task_suffix(host)


def queue_of(host: str) -> dict:
    """The operator arguments that route a host's task: its own queue; the default host keeps the default."""
    return {} if host == DEFAULT_HOST else {"queue": host}


def classes_on(policy: Policy, host: str) -> list[str]:
    """The classes with a path on `host` (policy order)."""
    return [name for name, log_class in policy.logs.classes.items() if any(p.host == host for p in log_class.paths)]


def unserved_hosts(policy: Policy, hosts: list[str]) -> dict[str, list[str]]:
    """Hosts the policy puts log paths on but the DAG has no task for, with their classes."""
    unserved: dict[str, list[str]] = {}
    for name, log_class in policy.logs.classes.items():
        for path in log_class.paths:
            if path.host not in hosts and name not in unserved.setdefault(path.host, []):
                unserved[path.host].append(name)
    return unserved


def check_worker(host: str) -> None:
    """Refuse to rotate host `host`'s paths on another host's worker (a queue served by the wrong worker)."""
    from trading_ops.logs.report import LogRotationError

    here = os.environ.get(WORKER_HOST_ENV)
    if here and here != host:
        raise LogRotationError(
            f"The rotation task of host {host} ran on the worker of host {here}: queue {host} must be served only "
            f"by the worker on {host} (airflow celery worker --queues {host})."
        )


def unfinished_tasks(states: dict[str, str], task_id: str) -> dict[int, str]:
    """The map indexes of `task_id` not finished well, from `get_task_states` keys (`<task_id>_<map index>`)."""
    unfinished = {}
    for key, state in states.items():
        index = key.removeprefix(f"{task_id}_")
        if key.startswith(f"{task_id}_") and index.isdigit() and state not in NOT_A_HOST_PROBLEM:
            unfinished[int(index)] = state or "none"
    return unfinished


def never_started(host: str, unfinished: dict[int, str], started: dict[int, str | None]) -> str | None:
    """The sentence naming `host` when some of its tasks were never taken by a worker, or None. (A task that
    started and failed raised its own alert through the task-failure callback.)"""
    never = sorted(index for index in unfinished if not started.get(index))
    if not never:
        return None
    return (
        f"log rotation on host {host} did not run: {len(never)} task(s) of {rotate_task_id(host)} never started "
        f"(states: {', '.join(sorted({unfinished[index] for index in never}))}): no worker took queue "
        f"{queue_of(host).get('queue', 'default')} within the run; is the worker on {host} running?"
    )
