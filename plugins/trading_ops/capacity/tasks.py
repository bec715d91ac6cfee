"""The tasks of capacity_review: the workload review, the cache review, and the run's summary.

The only module of the wing that touches Airflow's context (params, the run); each task imports the review when it
runs, so parsing the DAG file stays free of side effects.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task


def _review(name: str) -> dict:
    from airflow.sdk.exceptions import AirflowSkipException

    from trading_ops.capacity import review
    from trading_ops.policy import load_policy
    from trading_ops.runtime import run_info

    policy = load_policy()
    disabled = policy.capacity.disabled_reviews
    if name in disabled:
        raise AirflowSkipException(
            f"The {name} review is disabled by the policy (capacity.disabled_reviews): {disabled[name]}."
        )
    context = get_current_context()
    params = context["params"]
    run = review.review_workload if name == "workload" else review.review_caches
    return run(policy, run_info(context, policy), apply=bool(params["apply"]), dry_run=bool(params["dry_run"]))


@task(task_id="review_workload")
def review_workload() -> dict:
    """The Deployment, HPA and pods of trading-api against the policy (findings check `capacity_workload`)."""
    return _review("workload")


@task(task_id="review_caches")
def review_caches() -> dict:
    """Each cache's Redis server against the policy (findings checks `capacity_cache_<name>`)."""
    return _review("caches")


@task(task_id="summarize_review", trigger_rule="all_done")
def summarize_review(workload: dict | None, caches: dict | None) -> dict:
    """Runs after both reviews, failed or skipped ones too; fails the run if a review did not finish."""
    from trading_ops.capacity.review import summarize
    from trading_ops.policy import load_policy

    return summarize({"workload": workload, "caches": caches}, load_policy().capacity.disabled_reviews)


def capacity_review_tasks():
    return summarize_review(review_workload(), review_caches())
