"""Each DAG triggered through the REST API with conf, run by the real scheduler and executor, to success."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

# (dag_id, conf, expected final state); each issue adds its DAGs here.
E2E_RUNS: list[tuple[str, dict, str]] = [
    ("db_maintenance", {"dry_run": False}, "success"),
]


def test_standalone_serves_the_api_with_a_fixed_login(airflow_standalone):
    health = airflow_standalone.request("GET", "/api/v2/monitor/health", auth=False)
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    dags = airflow_standalone.request("GET", "/api/v2/dags?limit=100")
    assert "dags" in dags


@pytest.mark.parametrize(("dag_id", "conf", "expected"), E2E_RUNS, ids=[run[0] for run in E2E_RUNS])
def test_dag_runs_on_the_real_scheduler(airflow_standalone, dag_id, conf, expected):
    run_id = airflow_standalone.trigger(dag_id, conf)
    run = airflow_standalone.wait_for_run(dag_id, run_id, timeout=600)
    states = airflow_standalone.task_instances(dag_id, run_id)
    assert run["state"] == expected, f"{dag_id} ended {run['state']}: {states}"
    assert states and all(state in ("success", "skipped") for state in states.values()), states
