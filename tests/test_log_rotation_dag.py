"""The log_rotation DAG run by dag.test(): one mapped task per policy class, manual runs dry by default."""

from __future__ import annotations

import json

import pytest
from pyrage import x25519

from tests.support.dagbag import fresh_dag
from tests.test_logrotation import CLASSES, tree
from trading_ops.logrotation import extract_archive

IDENTITY = x25519.Identity.generate()


@pytest.fixture
def log_rotation_dag(airflow_db):
    return fresh_dag("log_rotation")


@pytest.fixture
def log_dirs(tmp_path, make_policy):
    dirs = {name: tmp_path / name for name in CLASSES}
    for name, directory in dirs.items():
        directory.mkdir()
        (directory / f"{name}.log").write_text(f"{name} line\n" * 1000)
    make_policy({f"logs.classes.{name}.paths.0.directory": str(directory) for name, directory in dirs.items()})
    return dirs


def test_a_manual_run_is_dry_by_default_and_acts_with_dry_run_false(log_rotation_dag, log_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY",
        json.dumps({"conn_type": "generic", "password": str(IDENTITY.to_public())}),
    )
    before = tree(tmp_path)

    dry = log_rotation_dag.test()

    assert dry.state == "success"
    assert tree(tmp_path) == before
    mapped = [ti for ti in dry.get_task_instances() if ti.task_id == "rotate_log_class"]
    assert sorted(ti.map_index for ti in mapped) == [0, 1, 2]

    real = log_rotation_dag.test(run_conf={"dry_run": False})

    assert real.state == "success"
    for name, directory in log_dirs.items():
        archives = [p for p in directory.iterdir() if not p.name.endswith((".sha256", ".log"))]
        assert len(archives) == 1, archives
        assert archives[0].name.endswith(".zst.age" if name == "audit_logs" else ".zst")
        with open(tmp_path / "out", "wb") as out:
            extract_archive(archives[0], out, [IDENTITY])
        assert (tmp_path / "out").read_text() == f"{name} line\n" * 1000


def test_without_the_key_connection_the_audit_class_fails_and_the_others_rotate(log_rotation_dag, log_dirs):
    for task in log_rotation_dag.tasks:
        task.retries = 0  # dag.test() would otherwise wait out the retry delays

    run = log_rotation_dag.test(run_conf={"dry_run": False})

    assert run.state == "failed"
    states = {ti.map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "rotate_log_class"}
    assert states == {0: "success", 1: "success", 2: "failed"}  # the policy lists audit_logs third
    assert list((log_dirs["audit_logs"]).iterdir()) == [log_dirs["audit_logs"] / "audit_logs.log"]
    assert any(p.name.endswith(".zst") for p in log_dirs["application_logs"].iterdir())
