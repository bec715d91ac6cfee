"""Every file in dags/ parses cleanly, without side effects, and follows the house rules."""

from __future__ import annotations

import ast
from datetime import timedelta

import pytest

from tests.support.dagbag import DAG_FILES
from tests.support.parse_probe import probe
from trading_ops.dag_defaults import DRY_RUN_MEANING, OWNER, SCHEDULE_TIMEZONE, TAGS
from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy

DAG_IDS = [path.stem for path in DAG_FILES]
# The manual's schedules (Asia/Seoul), written in the DAG files and nowhere else; None: triggered by hand only.
SCHEDULES = {
    "db_maintenance": "0 3 * * *",
    "db_backup_full": "0 1 * * 0",
    "db_backup_wal": "0 1 * * *",
    "db_restore": None,
    "log_rotation": "30 0 * * *",
    "security_checks_daily": "0 2 * * *",
    "security_checks_weekly": "0 4 * * 1",
    "security_checks_monthly": "0 5 1 * *",
    "system_health": "*/5 * * * *",
    "capacity_review": "0 6 * * *",
    # Sunday, four hours after db_backup_full (whose tasks may take its 4-hour timeout).
    "db_restore_drill": "0 5 * * 0",
    "incident_tracker": "* * * * *",
    "incident_response": None,
    # Off-host WAL (issue 13): within backup.wal_ship_within (5m) of archiving.
    "db_wal_ship": "* * * * *",
}
# One run per incident, and incidents overlap.
CONCURRENT_RUNS = {"incident_response"}
# The DAGs that change something, and so take a `dry_run`.
CHANGING = {
    "db_maintenance",
    "db_backup_full",
    "db_backup_wal",
    "db_restore",
    "log_rotation",
    "capacity_review",
    "db_wal_ship",
}


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_file_named_after_it(dagbag):
    assert set(dagbag.dag_ids) == set(SCHEDULES)
    assert set(DAG_IDS) == set(dagbag.dag_ids), "one DAG per file, named after its dag_id"
    for dag_id in dagbag.dag_ids:
        assert dagbag.dags[dag_id].fileloc.endswith(f"/dags/{dag_id}.py")


def _dag_decorator(node: ast.expr) -> ast.expr | None:
    """`node` if it is `@dag` or `@dag(...)`."""
    target = node.func if isinstance(node, ast.Call) else node
    return node if isinstance(target, ast.Name) and target.id == "dag" else None


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=DAG_IDS)
def test_the_dag_function_is_named_after_the_file(dag_file):
    """dag_id comes from the `@dag` function's name, as in the Airflow examples: never passed, never different."""
    decorated = {
        node.name: decorator
        for node in ast.walk(ast.parse(dag_file.read_text()))
        if isinstance(node, ast.FunctionDef)
        for decorator in filter(None, map(_dag_decorator, node.decorator_list))
    }
    assert list(decorated) == [dag_file.stem]
    keywords = decorated[dag_file.stem].keywords if isinstance(decorated[dag_file.stem], ast.Call) else []
    assert "dag_id" not in {keyword.arg for keyword in keywords}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=DAG_IDS)
def test_parse_touches_no_connection_variable_file_or_network(dag_file):
    """In a fresh interpreter, with the tripwires installed before the DAG file and everything it imports load."""
    report = probe(dag_file)
    modules = len(report["trading_ops_modules"])
    print(f"\ncold parse {dag_file.name}: {report['seconds'] * 1000:.0f} ms, {modules} trading_ops modules imported")
    assert report["import_errors"] == {}
    assert report["dag_ids"] == [dag_file.stem]
    assert report["calls"] == []
    assert report["opened"] == [], f"{dag_file.name} opened files while parsing: {report['opened']}"


def test_the_tripwires_cover_what_a_dag_file_imports(tmp_path):
    """A module imported by a DAG file that reads a Variable, a file and the network at import time is caught."""
    package = tmp_path / "lib"
    package.mkdir()
    (tmp_path / "settings.yaml").write_text("x: 1\n")
    (package / "careless.py").write_text(
        "import socket\n"
        "from airflow.sdk import Variable\n"
        f"SETTINGS = open({str(tmp_path / 'settings.yaml')!r}).read()\n"
        "try:\n    Variable.get('threshold')\nexcept AssertionError:\n    pass\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9))\nexcept AssertionError:\n    pass\n"
    )
    dag_file = tmp_path / "careless_dag.py"
    dag_file.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import dag, task\n"
        "import careless\n\n\n"
        "@dag(schedule=None, start_date=datetime(2026, 1, 1))\n"
        "def careless_dag():\n    task(lambda: None, task_id='noop')()\n\n\ncareless_dag()\n"
    )
    report = probe(dag_file, package)
    assert report["opened"] == [str(tmp_path / "settings.yaml")]
    assert [call.split("(")[0] for call in report["calls"]] == ["Variable.get", "socket.create_connection"]


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=DAG_IDS)
def test_house_rules(dag_file, dagbag):
    dag = dagbag.dags.get(dag_file.stem)
    assert dag is not None
    assert dag.description and "\n" not in dag.description and len(dag.description) <= 120, (
        "a one-line description, as the DAG list shows it"
    )
    assert dag.tags, "every DAG is tagged"
    assert set(dag.tags) <= TAGS, f"tags outside the vocabulary: {set(dag.tags) - TAGS}"
    assert dag.doc_md and len(dag.doc_md) > 400, "the module docstring is the runbook (doc_md)"
    for heading in ("Idempotency", "Triage", "Owner"):
        assert heading.lower() in dag.doc_md.lower(), f"the runbook has no {heading} section"
    assert dag.catchup is False, "no DAG here needs a backfill: each run acts on the present state"
    assert dag.max_active_runs == (16 if dag.dag_id in CONCURRENT_RUNS else 1)
    for task in dag.tasks:
        assert task.owner == OWNER, task.task_id
        assert task.retries >= 2, task.task_id
        assert task.retry_delay >= timedelta(seconds=10), task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.on_failure_callback, task.task_id
        assert task.task_id.replace("_", "").isalnum() and "_" in task.task_id.split(".")[-1], (
            f"task id {task.task_id} is not verb_object"
        )


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=DAG_IDS)
def test_the_schedule_is_the_manuals_in_the_teams_timezone(dag_file, dagbag):
    dag = dagbag.dags[dag_file.stem]
    expected = SCHEDULES[dag_file.stem]
    if expected is None:
        from airflow.sdk.definitions.timetables.simple import NullTimetable

        assert isinstance(dag.timetable, NullTimetable)
        return
    assert dag.timetable._expression == expected
    assert str(dag.timetable._timezone.name) == SCHEDULE_TIMEZONE == load_policy(DEFAULT_POLICY_PATH).timezone


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=DAG_IDS)
def test_dry_run_has_one_meaning(dag_file, dagbag):
    """Every DAG that changes something takes the one `dry_run` (dag_defaults.dry_run_param): off by default when
    scheduled, on when triggered by hand only."""
    dag = dagbag.dags[dag_file.stem]
    if dag.dag_id not in CHANGING:
        assert "dry_run" not in dag.params
        return
    param = dag.params.get_param("dry_run")
    assert param.value is (SCHEDULES[dag.dag_id] is None)
    assert param.schema["type"] == "boolean"
    assert DRY_RUN_MEANING in param.schema["description_md"]
