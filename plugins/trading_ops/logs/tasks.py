"""The log_rotation DAG's task functions: the one module of the wing that reads Airflow's context.

It turns the context into plain values (the run's time from `runtime.run_time`, the `dry_run` param, the age
recipients from the connection `logs.encryption_key_conn_id`, the chain's signing key from the connection
`logs.chain.signing_key_conn_id`, the backup repository for the chains' heads) and calls `run.rotate_log_class`
with them; `report_hosts` reads the states of the hosts' tasks (`hosts` has the rules).
"""

from __future__ import annotations

import socket

from trading_ops.alerting import Alert, send_alert
from trading_ops.backup.repository import repository_from_policy
from trading_ops.errors import UserError
from trading_ops.logs import hosts as log_hosts
from trading_ops.logs.chain import signing_key_from_connection, verify_key
from trading_ops.logs.report import RotationIncomplete
from trading_ops.logs.run import rotate_log_class as rotate_class
from trading_ops.policy import load_policy
from trading_ops.runtime import run_time
from trading_ops.streams import Recipients


class HostsNotReached(UserError):
    """Some hosts' rotations did not finish in this run (alerted, naming them); retrying the report helps none."""


def list_log_classes(host: str) -> list[str]:
    """The classes with a path on `host`."""
    return log_hosts.classes_on(load_policy(), host)


def rotate_log_class(name: str, host: str = log_hosts.DEFAULT_HOST) -> dict:
    """Rotate one class on one host for the current run; its summary goes to XCom. Fails (and is retried) when a
    step failed."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    log_hosts.check_worker(host)
    # Recorded first, so the host report tells a task that failed here from one no worker ever took.
    context["ti"].xcom_push(log_hosts.STARTED_KEY, socket.gethostname())
    policy = load_policy()
    log_class = policy.logs.classes.get(name)
    # Read in a dry run too: a missing or bad key fails the dry run as it would fail the real one.
    recipients = (
        Recipients.from_connection(policy.logs.encryption_key_conn_id) if log_class and log_class.encryption else None
    )
    signer = signing_key_from_connection(
        policy.logs.chain.signing_key_conn_id, verify_key(policy.logs.chain.public_key)
    )
    report = rotate_class(
        name,
        now=run_time(context),
        dry_run=context["params"]["dry_run"],
        recipients=recipients,
        signer=signer,
        heads=repository_from_policy(policy),
        policy=policy,
        host=host,
    )
    if report.failures:
        raise RotationIncomplete(
            f"{len(report.failures)} step(s) of {name} failed (first: {report.failures[0]}); the others completed."
        )
    return report.summary()


def report_hosts(hosts: list[str]) -> dict:
    """After every host's task is done (all_done): an alert naming each host whose rotation did not finish, or that
    the policy names but the DAG has no task for; then fail, so the run says it too."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    ti = context["ti"]
    policy = load_policy()
    problems: dict[str, str] = {}
    failed: list[str] = []
    for host in hosts:
        task_id = log_hosts.rotate_task_id(host)
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id]).get(ti.run_id, {})
        unfinished = log_hosts.unfinished_tasks(states, task_id)
        started = {
            index: ti.xcom_pull(task_ids=task_id, key=log_hosts.STARTED_KEY, map_indexes=index) for index in unfinished
        }
        if problem := log_hosts.never_started(host, unfinished, started):
            problems[host] = problem
        elif unfinished:
            failed.append(host)
    for host, classes in log_hosts.unserved_hosts(policy, hosts).items():
        problems[host] = (
            f"host {host} holds paths of {', '.join(classes)} but log_rotation has no task for it: add it to "
            f"{log_hosts.HOSTS_ENV} where the workers are defined and start a worker for queue {host}"
        )
    encrypted_on = {
        path.host for log_class in policy.logs.classes.values() if log_class.encryption for path in log_class.paths
    }
    for host, problem in problems.items():
        if context["params"]["dry_run"]:
            continue  # a dry run lists the problem (the return value and the log), sends nothing
        send_alert(
            Alert(
                severity="critical" if host in encrypted_on else "warning",
                source="log_rotation.hosts",
                summary=problem,
                details={"host": host},
                dedup_key=f"log_rotation:host:{host}",
            )
        )
    if problems or failed:
        raise HostsNotReached(
            "; ".join(
                [*problems.values(), *(f"the rotation on host {host} failed (see its task log)" for host in failed)]
            )
        )
    return {"hosts": hosts, "problems": problems}
