"""Every file in dags/ parses cleanly, without side effects, and follows the house rules."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from trading_ops.dag_defaults import OWNER, TAGS

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
EXPECTED_DAG_IDS = {
    "db_maintenance",
    "db_backup_full",
    "db_backup_wal",
    "db_restore",
    "log_rotation",
    "security_checks_daily",
    "security_checks_weekly",
    "security_checks_monthly",
    "system_health",
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_only_known_dag_ids(dagbag):
    assert set(dagbag.dag_ids) <= EXPECTED_DAG_IDS
    assert {p.stem for p in DAG_FILES} == set(dagbag.dag_ids), "one DAG per file, named after its dag_id"


class _Forbidden(AssertionError):
    pass


@pytest.fixture
def side_effect_tripwires(monkeypatch):
    """Record (and refuse) any connection, Variable, file or network access while a DAG file is imported."""
    from airflow.sdk import BaseHook, Variable

    calls: list[str] = []

    def refuse(what):
        def _refuse(*args, **kwargs):
            calls.append(f"{what}{args[:2]}")
            raise _Forbidden(f"{what} during DAG parsing")

        return _refuse

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(refuse("BaseHook.get_connection")))
    monkeypatch.setattr(Variable, "get", staticmethod(refuse("Variable.get")))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))

    opened: list[str] = []
    recording = {"on": False}

    def audit(event, args):
        if recording["on"] and event == "open" and isinstance(args[0], str | bytes):
            path = str(args[0])
            # .mo: the gettext catalog cron_descriptor reads whenever Airflow describes a cron schedule.
            if not path.endswith((".py", ".pyc", ".mo")) and "__pycache__" not in path:
                opened.append(path)

    sys.addaudithook(audit)
    yield calls, opened, recording
    recording["on"] = False


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.stem for p in DAG_FILES])
def test_parse_has_no_side_effects(dag_file, side_effect_tripwires, dagbag):
    calls, opened, recording = side_effect_tripwires
    spec = importlib.util.spec_from_file_location(f"parse_check_{dag_file.stem}", dag_file)
    module = importlib.util.module_from_spec(spec)
    recording["on"] = True
    started = time.perf_counter()
    spec.loader.exec_module(module)
    elapsed = time.perf_counter() - started
    recording["on"] = False
    print(f"\nparse time {dag_file.name}: {elapsed * 1000:.1f} ms (modules already imported by the DagBag)")
    assert calls == []
    assert opened == [], f"{dag_file.name} opened files while parsing: {opened}"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.stem for p in DAG_FILES])
def test_house_rules(dag_file, dagbag):
    dag = dagbag.dags.get(dag_file.stem)
    assert dag is not None
    assert dag.tags, "every DAG is tagged"
    assert set(dag.tags) <= TAGS, f"tags outside the vocabulary: {set(dag.tags) - TAGS}"
    assert dag.doc_md and len(dag.doc_md) > 400, "the module docstring is the runbook (doc_md)"
    for heading in ("Idempotency", "Triage", "Owner"):
        assert heading.lower() in dag.doc_md.lower(), f"the runbook has no {heading} section"
    assert dag.catchup is False, "no DAG here needs a backfill: each run acts on the present state"
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == OWNER, task.task_id
        assert task.retries >= 2, task.task_id
        assert task.retry_delay >= timedelta(seconds=10), task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.on_failure_callback, task.task_id
        assert task.task_id.replace("_", "").isalnum() and "_" in task.task_id.split(".")[-1], (
            f"task id {task.task_id} is not verb_object"
        )


def test_dag_files_parse_in_a_clean_interpreter():
    """Time each file's parse from cold, as the DAG processor does."""
    import subprocess

    for dag_file in DAG_FILES:
        code = (
            "import time, runpy; t = time.perf_counter(); "
            f"runpy.run_path({str(dag_file)!r}); print(time.perf_counter() - t)"
        )
        env = {**os.environ, "PYTHONPATH": str(DAGS_DIR.parent / "plugins")}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        print(f"\ncold parse {dag_file.name}: {float(result.stdout.strip().splitlines()[-1]) * 1000:.0f} ms")
