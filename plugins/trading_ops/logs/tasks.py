"""The log_rotation DAG's task functions: the one module of the wing that reads Airflow's context.

It turns the context into plain values (the run's time from `runtime.run_time`, the `dry_run` param, the age
recipients from the connection `logs.encryption_key_conn_id`) and calls `run.rotate_log_class` with them.
"""

from __future__ import annotations

from trading_ops.logs.report import RotationIncomplete
from trading_ops.logs.run import rotate_log_class as rotate_class
from trading_ops.policy import load_policy
from trading_ops.runtime import run_time
from trading_ops.streams import Recipients


def list_log_classes() -> list[str]:
    return list(load_policy().logs.classes)


def rotate_log_class(name: str) -> dict:
    """Rotate one class for the current run; its summary goes to XCom. Fails (and is retried) when a step failed."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    policy = load_policy()
    log_class = policy.logs.classes.get(name)
    # Read in a dry run too: a missing or bad key fails the dry run as it would fail the real one.
    recipients = (
        Recipients.from_connection(policy.logs.encryption_key_conn_id) if log_class and log_class.encryption else None
    )
    report = rotate_class(
        name, now=run_time(context), dry_run=context["params"]["dry_run"], recipients=recipients, policy=policy
    )
    if report.failures:
        raise RotationIncomplete(
            f"{len(report.failures)} step(s) of {name} failed (first: {report.failures[0]}); the others completed."
        )
    return report.summary()
