"""The project's DAGs as Airflow parses them: one DagBag of dags/ for the whole test session.

Tests that only look at a DAG share its parse (`project_dagbag`, or the `dagbag` fixture). A test that runs a DAG
with dag.test() or changes it takes a `fresh_dag`, its file parsed again on its own: dag.test() writes the run's
conf into the tasks' params (which even a deep copy of the DAG shares) and some tests switch retries off.
"""

from __future__ import annotations

from functools import cache

from tests.support.harness import ROOT

DAGS_DIR = ROOT / "dags"
DAG_FILES = sorted(path for path in DAGS_DIR.glob("*.py") if not path.name.startswith("_"))


@cache
def project_dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def fresh_dag(dag_id: str, *, no_retries: bool = False):
    """A private parse of one project DAG (its file is `<dag_id>.py`); `no_retries`: a failing task fails the run
    at once (dag.test() would otherwise wait out each retry delay)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS_DIR / f"{dag_id}.py")).dags[dag_id]
    if no_retries:
        for task in dag.tasks:
            task.retries = 0
    return dag


def run_dag(dag_id: str, conf: dict, logical_date=None) -> tuple[dict[str, str], dict]:
    """One dag.test() run of a fresh copy; returns (task id -> state, task id -> return value)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag_run = fresh_dag(dag_id).test(logical_date=logical_date, run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_id, key="return_value")).all()
        values = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    return states, values
