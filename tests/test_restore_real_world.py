"""db_restore on a database like real ones, not the project's demo: a schema from a public sample's mould
(partitioned table with a primary key, triggers, a domain, an enum, a materialized view, an identity column, a
sequence used by a column default without being OWNED BY it), its own owner role, privileges, settings, comment and
connection limit, and no amcheck. Real PostgreSQL, real pg_dump and pg_restore, dag.test()."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from tests.support.dagbag import fresh_dag
from trading_ops.restore.verification import verify_integrity

pytestmark = pytest.mark.usefixtures("airflow_db", "second_person_approves")

SHOP_SCHEMA = """
CREATE SCHEMA shop AUTHORIZATION shop_owner;
SET ROLE shop_owner;
CREATE DOMAIN shop.positive_amount AS numeric(12, 2) CHECK (VALUE > 0);
CREATE TYPE shop.order_status AS ENUM ('new', 'paid', 'shipped');
CREATE SEQUENCE shop.invoice_numbers START 1000;
CREATE TABLE shop.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE shop.invoices (
    number bigint PRIMARY KEY DEFAULT nextval('shop.invoice_numbers'),
    customer_id bigint NOT NULL REFERENCES shop.customers (id)
);
CREATE TABLE shop.orders (
    id bigserial,
    placed_at timestamptz NOT NULL,
    status shop.order_status NOT NULL,
    amount shop.positive_amount NOT NULL,
    customer_id bigint REFERENCES shop.customers (id),
    PRIMARY KEY (id, placed_at)
) PARTITION BY RANGE (placed_at);
CREATE TABLE shop.orders_2026_10 PARTITION OF shop.orders FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE shop.orders_2026_11 PARTITION OF shop.orders FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE INDEX orders_status ON shop.orders (status);
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON shop.customers FOR EACH ROW EXECUTE FUNCTION shop.touch();
INSERT INTO shop.customers (name) SELECT 'customer ' || n FROM generate_series(1, 50) AS n;
INSERT INTO shop.invoices (customer_id) SELECT 1 + n % 50 FROM generate_series(1, 40) AS n;
INSERT INTO shop.orders (placed_at, status, amount, customer_id)
SELECT timestamptz '2026-10-01' + n * interval '1 hour',
       (ARRAY['new', 'paid', 'shipped']::shop.order_status[])[1 + n % 3], 1 + n % 100, 1 + n % 50
FROM generate_series(1, 1000) AS n;
UPDATE shop.customers SET name = name || ' (vip)' WHERE id <= 5;
CREATE MATERIALIZED VIEW shop.daily_totals AS
    SELECT date_trunc('day', placed_at) AS day, sum(amount) AS total FROM shop.orders GROUP BY 1;
CREATE UNIQUE INDEX daily_totals_day ON shop.daily_totals (day);
RESET ROLE;
"""


def _identity_statements(name: str) -> list[sql.Composed]:
    db = sql.Identifier(name)
    return [
        sql.SQL(text).format(db=db)
        for text in (
            "ALTER DATABASE {db} OWNER TO shop_owner",
            "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC",
            "GRANT CONNECT ON DATABASE {db} TO shop_reader",
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO shop_writer WITH GRANT OPTION",
            "ALTER DATABASE {db} SET work_mem TO '12MB'",
            'ALTER DATABASE {db} SET search_path TO shop, "$user", public',
            "ALTER DATABASE {db} SET shop.region TO 'eu-west'",
            "ALTER ROLE shop_reader IN DATABASE {db} SET statement_timeout TO '5s'",
            "COMMENT ON DATABASE {db} IS 'The shop''s orders and invoices'",
            "ALTER DATABASE {db} WITH CONNECTION LIMIT 40",
        )
    ]


@pytest.fixture(scope="module")
def shop_roles(pg_cluster):
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        for role in ("shop_owner", "shop_reader", "shop_writer"):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        for role in ("shop_owner", "shop_reader", "shop_writer"):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def shop_db(pg_cluster, shop_roles, monkeypatch):
    """A new database from template0 (so without the harness template's amcheck), its own owner and identity; the
    `trading_db` connection (backups and restores) points at it. Dropped with every database the test left."""
    name = f"shop_{datetime.now(UTC):%H%M%S%f}"
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        # Not the cluster's encoding (UTF8): the staging copy must be created like the database it replaces.
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'").format(sql.Identifier(name))
        )
    with psycopg.connect(pg_cluster.conninfo(name), autocommit=True) as conn:
        conn.execute(SHOP_SCHEMA)
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        for statement in _identity_statements(name):
            conn.execute(statement)
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", pg_cluster.uri(name))
    yield name
    for database in _databases(pg_cluster):
        if database.startswith(name):
            pg_cluster.drop_database(database)


def _databases(pg_cluster) -> set[str]:
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def _identity(pg_cluster, name: str) -> dict:
    """The identity as psql's \\l+ and \\drds show it, read independently of the code under test."""
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        owner, acl, limit, comment, encoding = conn.execute(
            "SELECT datdba::regrole::text, (SELECT array_agg(a ORDER BY a::text) FROM unnest(datacl) AS a)::text,"
            " datconnlimit, shobj_description(oid, 'pg_database'), pg_encoding_to_char(encoding)"
            " FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        settings = conn.execute(
            "SELECT coalesce(setrole::regrole::text, '-') || ': ' || array_to_string(setconfig, '; ')"
            " FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = %s"
            " ORDER BY 1",
            (name,),
        ).fetchall()
    return {
        "owner": owner,
        "acl": acl,
        "connection_limit": limit,
        "comment": comment,
        "settings": settings,
        "encoding": encoding,
    }


def _contents(pg_cluster, name: str) -> dict:
    with psycopg.connect(pg_cluster.conninfo(name)) as conn:
        return {
            "rows": {
                table: conn.execute(f"SELECT count(*), sum(hashtext(t::text)) FROM {table} AS t").fetchone()
                for table in ("shop.customers", "shop.invoices", "shop.orders", "shop.daily_totals")
            },
            "extensions": [row[0] for row in conn.execute("SELECT extname FROM pg_extension ORDER BY 1")],
            # `ops` holds the alerting state that the run's own notices write into the restored database.
            "schemas": [
                row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname <> 'ops' ORDER BY 1")
            ],
        }


def test_the_shop_database_is_built_as_the_tests_need(pg_cluster, shop_db):
    identity = _identity(pg_cluster, shop_db)
    assert identity["owner"] == "shop_owner" and "=Tc/" not in identity["acl"], "PUBLIC lost CONNECT"
    assert identity["encoding"] == "LATIN1"
    assert "amcheck" not in _contents(pg_cluster, shop_db)["extensions"]
    with psycopg.connect(pg_cluster.conninfo(shop_db)) as conn:
        owned = conn.execute("SELECT pg_get_serial_sequence('shop.invoices', 'number')").fetchone()[0]
        partitioned = conn.execute("SELECT count(*) FROM pg_class WHERE relkind = 'I'").fetchone()[0]
    assert owned is None, "invoice_numbers must not be OWNED BY its column"
    assert partitioned == 2, "the partitioned primary key and index"


def test_verification_installs_amcheck_checks_leaf_indexes_and_default_sequences(pg_cluster, shop_db):
    with psycopg.connect(pg_cluster.conninfo(shop_db), autocommit=True) as conn:
        conn.execute("SELECT setval('shop.invoice_numbers', 1010)")  # behind invoices.number (max 1039)
        conn.execute("SELECT setval(pg_get_serial_sequence('shop.customers', 'id'), 3)")  # the identity's
        counts = dict(
            conn.execute(
                "SELECT n.nspname || '.' || c.relname, 0 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'r' AND n.nspname = 'shop'"
            ).fetchall()
        )
        for table in counts:
            counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    before = _contents(pg_cluster, shop_db)

    report = verify_integrity("trading_db", shop_db, counts, jobs=2)

    assert report.amcheck_installed
    # customers, invoices, both order partitions' primary keys and status indexes, the materialized view's index;
    # never the two partitioned indexes of shop.orders.
    assert report.indexes_checked == 7
    assert sorted(report.problems) == [
        "sequence shop.customers_id_seq is at 3, behind shop.customers.id max 50",
        "sequence shop.invoice_numbers is at 1010, behind shop.invoices.number max 1039",
    ]
    assert report.sequences_checked == 3, "identity, bigserial of the partitioned orders (once), invoice_numbers"
    assert _contents(pg_cluster, shop_db) == before, "amcheck and its schema are gone again"


def test_a_check_that_cannot_run_on_the_copy_is_a_finding_not_a_crash(pg_cluster, shop_db):
    """A table of the manifest missing from the copy, or the archive check on a database without the manual's
    archive: found as problems (the task then fails at once), not raised as errors the task would retry."""
    report = verify_integrity(
        "trading_db", shop_db, {"shop.customers": 50, "shop.gone": 5}, disjoint=("shop.orders", "shop.archive", "id")
    )
    assert report.problems == [
        'check row count shop.gone could not run on the restored copy: relation "shop.gone" does not exist',
        'check disjoint shop.orders could not run on the restored copy: relation "shop.archive" does not exist',
    ]


def _restore_dag(retries_off: bool):
    dag = fresh_dag("db_restore")
    if retries_off:
        for task in dag.tasks:
            task.retries = 0
    return dag


def _backup(tmp_path, make_policy, **policy_changes):
    from trading_ops import backup as backups
    from trading_ops.policy import load_policy

    make_policy({"backup.repository": str(tmp_path / "repository"), **policy_changes})
    repository = backups.repository_from_policy(load_policy())
    info = backups.take_full_backup(repository, backups.full_backup_id(datetime.now(UTC)), conn_id="trading_db")
    return backups.verify_backup(repository, info)


def _real(name: str) -> dict:
    return {"dry_run": False, "confirm": name, "target_database": name, "jobs": 2}


def test_the_shop_database_restores_verifies_and_keeps_its_identity_through_the_swap(
    pg_cluster, shop_db, tmp_path, make_policy, fake_trading_api, alert_fakes
):
    backup = _backup(tmp_path, make_policy)
    expected, identity = _contents(pg_cluster, shop_db), _identity(pg_cluster, shop_db)
    with psycopg.connect(pg_cluster.conninfo(shop_db), autocommit=True) as conn:
        conn.execute("DROP TABLE shop.invoices")
        conn.execute("DELETE FROM shop.orders WHERE id % 4 = 0")

    run = _restore_dag(retries_off=True).test(run_conf=_real(shop_db))

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert _contents(pg_cluster, shop_db) == expected, "the rows, and no amcheck or schema of the verification"
    assert _identity(pg_cluster, shop_db) == identity
    report = run.get_task_instance("report_restore").xcom_pull(task_ids="report_restore")
    assert report["amcheck_installed_and_removed"] is True and report["indexes_verified"] == 7
    carried = report["identity_carried"]
    assert carried["owner"] == "shop_owner" and carried["connection_limit"] == 40
    assert carried["comment"] == "The shop's orders and invoices"
    assert "shop_reader=c/shop_owner" in carried["acl"] and "shop_writer=T*c*/shop_owner" in carried["acl"]
    assert carried["settings"] == [
        "work_mem=12MB",
        'search_path=shop, "$user", public',
        "shop.region=eu-west",
        "shop_reader (role in database): statement_timeout=5s",
    ]
    retired = report["retired_database"]
    assert _identity(pg_cluster, retired)["owner"] == "shop_owner", "the retired copy keeps its identity too"
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        conn.execute("SET ROLE shop_reader")
        assert conn.execute("SELECT has_database_privilege(%s, 'CONNECT')", (shop_db,)).fetchone()[0]
        conn.execute("SET ROLE shop_owner")
        conn.execute("RESET ROLE")
    assert backup.id in report["backup_id"]


def test_a_corrupt_restored_copy_fails_verification_at_once_with_one_try(
    pg_cluster, shop_db, tmp_path, make_policy, fake_trading_api, alert_fakes, monkeypatch
):
    """The copy's leaf index misses rows (as disk damage would do): amcheck, installed for the check, finds it; the
    task fails on its first try although it declares retries, and the live database stays in service as it was."""
    from trading_ops.restore import database as steps

    _backup(tmp_path, make_policy)
    before, identity = _contents(pg_cluster, shop_db), _identity(pg_cluster, shop_db)
    real_run = steps.run_pg_restore

    def restore_then_damage(conn_id, dump, database, **kwargs):
        items = real_run(conn_id, dump, database, **kwargs)
        with psycopg.connect(pg_cluster.conninfo(database), autocommit=True) as conn:
            index = "shop.orders_2026_10_pkey"
            conn.execute("UPDATE pg_index SET indisready = false WHERE indexrelid = %s::regclass", (index,))
            conn.execute(
                "INSERT INTO shop.orders_2026_10 (id, placed_at, status, amount)"
                " SELECT 100000 + n, '2026-10-15', 'new', 1 FROM generate_series(1, 50) AS n"
            )
            conn.execute("UPDATE pg_index SET indisready = true WHERE indexrelid = %s::regclass", (index,))
        return items

    monkeypatch.setattr(steps, "run_pg_restore", restore_then_damage)
    dag = _restore_dag(retries_off=False)
    assert dag.get_task("verify_integrity").retries == 2, "the retries it would have had"

    run = dag.test(run_conf=_real(shop_db))

    instances = {ti.task_id: ti for ti in run.get_task_instances()}
    assert instances["verify_integrity"].state == "failed" and instances["verify_integrity"].try_number == 1
    assert instances["swap_databases"].state == "upstream_failed"
    assert instances["scale_up_workload"].state == "success"
    assert _contents(pg_cluster, shop_db) == before and _identity(pg_cluster, shop_db) == identity
    assert not any(name.startswith(f"{shop_db}_restore_") for name in _databases(pg_cluster)), "staging dropped"
    slack, pagerduty = alert_fakes
    page = pagerduty.only_page()
    assert page["payload"]["source"] == "db_restore.verify_integrity"
    assert "shop.orders_2026_10_pkey failed amcheck" in page["payload"]["custom_details"]["error"]


# --- free space on the server for the staging copy ------------------------------------------------------------

GiB = 1024**3
FREE_QUERY = 'min(node_filesystem_avail_bytes{mountpoint="/var/lib/postgresql"})'
AT = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@pytest.fixture
def prometheus_source(prometheus_fake, monkeypatch):
    """The Prometheus fake as the `prometheus` connection; the policy names it when a test says so."""
    prometheus_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json())
    return prometheus_fake


def _free_space(make_policy, needed: int, **changes) -> dict:
    from trading_ops.policy import load_policy
    from trading_ops.restore import database

    make_policy(changes)
    return database.check_server_free_space(load_policy(), needed, AT)


def test_free_space_is_measured_by_the_node_metric_at_the_runs_time(make_policy, prometheus_source):
    prometheus_source.values[FREE_QUERY] = 10 * GiB
    space = _free_space(make_policy, GiB, **{"monitoring.sources.prometheus_conn_id": "prometheus"})
    assert space == {
        "checked": True,
        "needed": int(1.2 * GiB),
        "free": 10 * GiB,
        "source": f"Prometheus (prometheus): {FREE_QUERY}",
    }
    [request] = prometheus_source.requests
    assert request.query["query"] == [FREE_QUERY] and prometheus_source.queried_times() == [AT.timestamp()]


def test_a_staging_copy_that_does_not_fit_is_refused_in_one_sentence(make_policy, prometheus_source):
    from trading_ops.restore.request import RestoreRefused

    prometheus_source.values[FREE_QUERY] = GiB
    with pytest.raises(RestoreRefused) as refused:
        _free_space(make_policy, GiB, **{"monitoring.sources.prometheus_conn_id": "prometheus"})
    assert str(refused.value) == (
        f"the database server has 1.00 GiB free (Prometheus (prometheus): {FREE_QUERY}) but the staging copy needs "
        "about 1.20 GiB (the backup's database size with 1.2x headroom): free some space there or use restore_mode "
        "in_place."
    )


def test_without_a_metric_the_policy_figure_decides_and_without_either_nothing_is_claimed(
    make_policy, prometheus_source, monkeypatch
):
    from trading_ops.dev.localpg import free_port
    from trading_ops.restore.request import RestoreRefused

    with_prometheus = {"monitoring.sources.prometheus_conn_id": "prometheus"}
    space = _free_space(make_policy, GiB, **with_prometheus, **{"restore.server_free_space.known_free": "5GB"})
    assert space == {
        "checked": True,
        "needed": int(1.2 * GiB),
        "free": 5 * GiB,
        "source": "policy restore.server_free_space.known_free",
    }, "Prometheus has no data for the query: the figure stands in"
    with pytest.raises(RestoreRefused, match="staging copy needs about"):
        _free_space(make_policy, 10 * GiB, **with_prometheus, **{"restore.server_free_space.known_free": "5GB"})

    assert _free_space(make_policy, GiB) == {
        "checked": False,
        "needed": int(1.2 * GiB),
        "reason": (
            f"Prometheus (prometheus) has no data for {FREE_QUERY}; restore.server_free_space.known_free is not set"
        ),
    }
    # Prometheus is down: the restore is not blocked by the monitoring, and the plan says what was not checked.
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROMETHEUS", f'{{"conn_type": "http", "host": "127.0.0.1", "port": {free_port()}}}'
    )
    space = _free_space(make_policy, GiB, **with_prometheus)
    assert not space["checked"] and space["reason"].startswith("Prometheus (prometheus) did not answer: ")


def test_a_dry_run_shows_the_free_space_check_and_a_full_server_refuses_the_restore(
    pg_cluster, shop_db, tmp_path, make_policy, prometheus_source, fake_trading_api, alert_fakes, caplog
):
    _backup(tmp_path, make_policy)
    run = _restore_dag(retries_off=False).test(run_conf={"target_database": shop_db})
    assert run.state == "success"
    assert (
        f"server disk       free space not checked: Prometheus (prometheus) has no data for {FREE_QUERY}" in caplog.text
    )

    _backup(tmp_path, make_policy, **{"monitoring.sources.prometheus_conn_id": "prometheus"})
    prometheus_source.values[FREE_QUERY] = 4096
    run = _restore_dag(retries_off=False).test(run_conf=_real(shop_db))

    validate = run.get_task_instance("validate_request")
    assert validate.state == "failed" and validate.try_number == 1
    assert "the database server has 0.00 GiB free (Prometheus (prometheus)" in caplog.text
    assert fake_trading_api.scale_requests() == []
    assert not any(name.startswith(f"{shop_db}_restore_") for name in _databases(pg_cluster))
