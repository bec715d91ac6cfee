"""Whether a restored database is the backup: the manual's verify_data_integrity.py, run in parallel.

Row counts against the manifest, amcheck on every btree index, no invalid constraint or index, sequences not behind
their columns, and no key both in a table and its archive. A restored copy that fails is damage, not a user's
mistake: `IntegrityError` fails the task at once (a retry would check the same copy) and alerts at the DAG's level.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import psycopg
from airflow.sdk.exceptions import AirflowFailException

from trading_ops.db import connect, connection
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


class IntegrityError(AirflowFailException):
    """The restored database does not match its backup."""


@dataclass
class IntegrityReport:
    tables_checked: int
    indexes_checked: int
    sequences_checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _qualified(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def verify_integrity(
    conn_id: str,
    database: str,
    expected_row_counts: dict[str, int],
    *,
    disjoint: tuple[str, str, str] | None = None,
    jobs: int = 1,
) -> IntegrityReport:
    """Every check on `database`; `disjoint` is (table, archive table, key column): no key may be in both.

    The checks run on `jobs` connections at once, the amcheck of the biggest indexes first, since they dominate the
    time.
    """
    with connection(conn_id, database=database, autocommit=True) as conn:
        indexes = conn.execute(load_sql("restore/btree_indexes.sql")).fetchall()
        sequences = conn.execute(load_sql("restore/owned_sequences.sql")).fetchall()
    checks = [partial(_check_index, oid, f"{schema}.{name}") for oid, schema, name, _size in indexes]
    checks += [partial(_check_row_count, table, expected) for table, expected in sorted(expected_row_counts.items())]
    checks += [_check_invalid_objects, partial(_check_sequences, sequences)]
    if disjoint:
        checks.append(partial(_check_disjoint, *disjoint))
    problems = [problem for found in _run_checks(conn_id, database, checks, jobs) for problem in found]
    report = IntegrityReport(len(expected_row_counts), len(indexes), len(sequences), problems)
    log.info(
        "Integrity of %s: %d tables, %d btree indexes, %d sequences checked, %d problem(s)",
        database,
        report.tables_checked,
        report.indexes_checked,
        report.sequences_checked,
        len(problems),
    )
    for problem in problems:
        log.error("Integrity problem: %s", problem)
    return report


def _run_checks(conn_id: str, database: str, checks: list, jobs: int) -> list[list[str]]:
    local = threading.local()
    opened = []

    def run(check):
        if not hasattr(local, "conn"):
            local.conn = connect(conn_id, database=database, autocommit=True)
            opened.append(local.conn)
        return check(local.conn)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(run, checks))
    finally:
        for conn in opened:
            conn.close()


def _check_index(index_oid: int, name: str, conn) -> list[str]:
    try:
        conn.execute(load_sql("restore/check_btree_index.sql"), {"index_oid": index_oid})
    except psycopg.Error as exc:  # amcheck reports corruption as an error naming the index
        return [f"index {name} failed amcheck: {str(exc).strip()}"]
    return []


def _check_row_count(table: str, expected: int, conn) -> list[str]:
    actual = conn.execute(load_sql("restore/count_rows.sql", table=_qualified(table))).fetchone()[0]
    return [] if actual == expected else [f"{table} has {actual} rows but the backup manifest says {expected}"]


def _check_invalid_objects(conn) -> list[str]:
    rows = conn.execute(load_sql("restore/invalid_objects.sql")).fetchall()
    return [f"{kind} {name} on {relation} is not valid" for kind, relation, name in rows]


def _check_sequences(sequences: list, conn) -> list[str]:
    problems = []
    for seq_schema, seq_name, tab_schema, tab_name, column, last_used in sequences:
        highest = conn.execute(
            load_sql("restore/max_column_value.sql", table=(tab_schema, tab_name), column=column)
        ).fetchone()[0]
        if highest is not None and last_used < highest:
            problems.append(
                f"sequence {seq_schema}.{seq_name} is at {last_used}, behind {tab_schema}.{tab_name}.{column} "
                f"max {highest}"
            )
    return problems


def _check_disjoint(source: str, archive: str, key: str, conn) -> list[str]:
    shared = conn.execute(
        load_sql("restore/shared_keys.sql", source=_qualified(source), archive=_qualified(archive), key=key)
    ).fetchone()[0]
    return [f"{shared} {key} value(s) are in both {source} and {archive}"] if shared else []
