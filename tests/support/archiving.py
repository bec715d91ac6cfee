"""A PostgreSQL cluster of its own that archives WAL, for the tests of point-in-time restores and drills: its own
archive, repository and policy (readable by the postgres OS user, which runs the recovery instances), demo data
in one database and copies of it."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.support.harness import DEMO_END, RUN_DIR


@contextmanager
def archiving_cluster(
    name: str, demo_database: str, *, copies: Sequence[str] = (), empty: Sequence[str] = ()
) -> Generator[tuple[object, Path]]:
    """(cluster, policy path) under RUN_DIR/<name>: `demo_database` holds the demo schema and a month of data,
    `copies` are made from it as a template, `empty` are created empty; removed afterwards."""
    from trading_ops.dev.demo_data import create_schema, load_demo_data
    from trading_ops.dev.local_policy import write_local_policy
    from trading_ops.dev.localpg import LocalCluster

    base = RUN_DIR / name
    cluster = LocalCluster(base / "pg")
    policy = write_local_policy(
        base / "policy.yaml", base / "root", wal_archive_dir=cluster.wal_archive_dir, airflow_url=""
    )
    cluster.init()
    cluster.start()
    try:
        cluster.create_database(demo_database)
        with psycopg.connect(cluster.conninfo(demo_database)) as conn:
            create_schema(conn)
            load_demo_data(conn, end=DEMO_END, months=1, step=timedelta(hours=6), order_step=timedelta(days=1))
        for copy in copies:
            cluster.create_database(copy, template=demo_database)
        for database in empty:
            cluster.create_database(database)
        yield cluster, policy
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def archive_now(cluster) -> str:
    """Close a new segment and wait until it is archived; returns its name."""
    from trading_ops.backup.wal import switch_and_wait

    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        # A commit record first: on a server idle since the last switch, pg_switch_wal() switches nothing and
        # names the segment archived before.
        conn.execute("SELECT pg_current_xact_id()")
        return switch_and_wait(conn, cluster.wal_archive_dir, timedelta(seconds=30))


def verified_full_backup(cluster, policy: Path, database: str):
    """Full backup 20261101T000000Z of the cluster (its dump of `database`) under `policy`, verified."""
    from trading_ops import backup as backups

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADING_OPS_POLICY", str(policy))
        patch.setenv("AIRFLOW_CONN_TRADING_DB", cluster.uri(database))
        repository = backups.repository_from_policy()
        info = backups.take_full_backup(repository, "20261101T000000Z", conn_id="trading_db")
        return backups.verify_backup(repository, info, deep=False)
