"""Whether a restored database is the backup: the manual's verify_data_integrity.py, run in parallel.

Row counts against the manifest, amcheck on every leaf btree index, no invalid constraint or index, no sequence
behind a column it feeds (owned, identity or merely named in a column default), and no key both in a table and its
archive. A restored copy that fails is damage, not a user's mistake: `IntegrityError` fails the task at once (a retry
would check the same copy) and alerts at the DAG's level. A check that cannot even run its SQL on the copy (a table
of the manifest missing, say) is such a failure too; only a lost connection is left to the task's retries.

Any database can be verified: where the restored copy has no amcheck (it is per database and the backed-up one need
not have it), the verification installs it in a schema of its own and removes both again when it is done, so the
copy that is swapped in has exactly the backed-up schema.
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
    # True when amcheck was installed for the check (and removed after it); False when the copy had it already.
    amcheck_installed: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


AMCHECK_SCHEMA = "trading_ops_amcheck"


def _qualified(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def archive_invariant(policy, expected_row_counts: dict[str, int]) -> tuple[str, str, str] | None:
    """The `disjoint` argument of verify_integrity for the manual's archive tables (no key both in market_data and
    its archive), when the database has them; None otherwise."""
    archive = policy.maintenance.archive
    source, archived = f"{archive.schema_}.{archive.source_table}", f"{archive.schema_}.{archive.archive_table}"
    return (source, archived, archive.key_column) if {source, archived} <= expected_row_counts.keys() else None


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
        amcheck_schema, installed = _ensure_amcheck(conn)
        try:
            indexes = conn.execute(load_sql("restore/btree_indexes.sql")).fetchall()
            sequences = conn.execute(load_sql("restore/column_sequences.sql")).fetchall()
            checks = [
                partial(_check_index, oid, f"{schema}.{name}", amcheck_schema) for oid, schema, name, _size in indexes
            ]
            checks += [
                partial(_check_row_count, table, expected) for table, expected in sorted(expected_row_counts.items())
            ]
            checks += [_check_invalid_objects, partial(_check_sequences, sequences)]
            if disjoint:
                checks.append(partial(_check_disjoint, *disjoint))
            problems = [problem for found in _run_checks(conn_id, database, checks, jobs) for problem in found]
        finally:
            if installed:
                conn.execute(load_sql("restore/remove_amcheck.sql", schema=amcheck_schema))
                log.info("Removed amcheck (and schema %s) from %s again", amcheck_schema, database)
    report = IntegrityReport(len(expected_row_counts), len(indexes), len(sequences), problems, installed)
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


def _ensure_amcheck(conn) -> tuple[str, bool]:
    """The schema holding amcheck in the connected database, and whether it was installed just now."""
    found = conn.execute(load_sql("restore/amcheck_schema.sql")).fetchone()
    if found:
        return found[0], False
    conn.execute(load_sql("restore/install_amcheck.sql", schema=AMCHECK_SCHEMA))
    log.info("The restored copy has no amcheck: installed it in schema %s for the verification", AMCHECK_SCHEMA)
    return AMCHECK_SCHEMA, True


def _run_checks(conn_id: str, database: str, checks: list, jobs: int) -> list[list[str]]:
    local = threading.local()
    opened = []

    def run(check):
        if not hasattr(local, "conn"):
            local.conn = connect(conn_id, database=database, autocommit=True)
            opened.append(local.conn)
        try:
            return check(local.conn)
        except psycopg.OperationalError:
            raise  # the server or the connection went away: the task's retries are for that
        except psycopg.Error as exc:  # the copy lacks what the check reads: that is a finding, not a flake
            return [f"{_describe(check)} could not run on the restored copy: {str(exc).strip().splitlines()[0]}"]

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(run, checks))
    finally:
        for conn in opened:
            conn.close()


def _describe(check) -> str:
    """`check row count public.orders` for partial(_check_row_count, "public.orders", 5)."""
    func = check.func if isinstance(check, partial) else check
    subject = next((arg for arg in getattr(check, "args", ()) if isinstance(arg, str)), "")
    return f"{func.__name__.removeprefix('_').replace('_', ' ')} {subject}".strip()


def _check_index(index_oid: int, name: str, amcheck_schema: str, conn) -> list[str]:
    try:
        conn.execute(load_sql("restore/check_btree_index.sql", schema=amcheck_schema), {"index_oid": index_oid})
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
