"""The restore's database steps on the server: checks before anything changes, pg_restore, the swap, and the names
of the staging and retired databases.

pg_restore is the installed one able to read the dump (the manifest's pg_dump version) and talk to the server
(`pg_restore_program`), never whatever is first on PATH. Credentials travel in the environment, never in argv.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from psycopg import sql

from trading_ops import pgtools
from trading_ops.db import connection, libpq_env
from trading_ops.restore.request import RestoreRefused
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

RETIRED_STAMP = "%Y%m%dT%H%M%S"
# pg_restore needs room for the decompressed dump next to the data it writes; ask for this much headroom.
DISK_HEADROOM = 1.2


def staging_name(target: str, stamp: datetime) -> str:
    return f"{target}_restore_{stamp:{RETIRED_STAMP}}".lower()


def retired_name(target: str, stamp: datetime) -> str:
    return f"{target}_pre_restore_{stamp:{RETIRED_STAMP}}".lower()


# --- checks before anything changes ---------------------------------------------------------------------------


def database_exists(conn_id: str, name: str) -> bool:
    with connection(conn_id, database="postgres") as conn:
        return conn.execute(load_sql("restore/database_exists.sql"), {"name": name}).fetchone()[0]


def check_may_swap(conn_id: str, target: str) -> None:
    """A swap creates a database and renames the target: refuse a role that could do neither before anything is
    scaled down."""
    with connection(conn_id, database="postgres") as conn:
        allowed = conn.execute(load_sql("restore/may_swap.sql"), {"name": target}).fetchone()[0]
    if not allowed:
        raise RestoreRefused(
            f"the role of connection {conn_id} may not swap {target}: it needs CREATEDB and ownership of {target} "
            "(or superuser); use restore_mode in_place or another connection."
        )


def check_disk_space(work_dir: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(work_dir).free
    if free < needed_bytes * DISK_HEADROOM:
        raise RestoreRefused(
            f"{work_dir} has {free / 1024**3:.1f} GiB free but the restore needs about "
            f"{needed_bytes * DISK_HEADROOM / 1024**3:.1f} GiB."
        )


def check_server_free_space(policy, needed_bytes: int, at: datetime) -> dict:
    """Whether the database server has room for a staging copy of `needed_bytes` (the backup's database size) with
    headroom: measured by Prometheus (policy `restore.server_free_space.prometheus_query` through
    `monitoring.sources.prometheus_conn_id`, evaluated at `at`), else the policy's `known_free` figure. Refuses a
    restore that would not fit; returns what was checked, or `checked: False` and why not, for the plan."""
    from trading_ops.monitoring.collect import MonitoringError, query_single_values

    wanted = policy.restore.server_free_space
    conn_id = policy.monitoring.sources.prometheus_conn_id
    needed = int(needed_bytes * DISK_HEADROOM)
    free, source, unknown = None, None, []
    if not wanted.prometheus_query:
        unknown.append("restore.server_free_space.prometheus_query is not set")
    else:
        try:
            measured = query_single_values(
                conn_id,
                {"server_free_bytes": wanted.prometheus_query},
                at,
                policy.monitoring.sources.prometheus_timeout,
            )["server_free_bytes"]
        except (MonitoringError, OSError) as exc:  # requests' errors are OSErrors
            unknown.append(f"Prometheus ({conn_id}) did not answer: {exc}")
        else:
            if measured is None:
                unknown.append(f"Prometheus ({conn_id}) has no data for {wanted.prometheus_query}")
            else:
                free, source = int(measured), f"Prometheus ({conn_id}): {wanted.prometheus_query}"
    if free is None and wanted.known_free is not None:
        free, source = wanted.known_free, "policy restore.server_free_space.known_free"
    if free is None:
        unknown.append("restore.server_free_space.known_free is not set")
        return {"checked": False, "needed": needed, "reason": "; ".join(unknown)}
    if free < needed:
        raise RestoreRefused(
            f"the database server has {free / 1024**3:.2f} GiB free ({source}) but the staging copy needs about "
            f"{needed / 1024**3:.2f} GiB (the backup's database size with {DISK_HEADROOM}x headroom): free some space "
            "there or use restore_mode in_place."
        )
    return {"checked": True, "needed": needed, "free": free, "source": source}


def describe_free_space(space: dict) -> str:
    """The plan's line for what `check_server_free_space` found."""
    if not space["checked"]:
        return f"free space not checked: {space['reason']}"
    return (
        f"{space['free'] / 1024**3:.2f} GiB free ({space['source']}), the staging copy needs about "
        f"{space['needed'] / 1024**3:.2f} GiB"
    )


def check_amcheck_available(conn_id: str) -> None:
    """The verification installs amcheck in a restored copy that lacks it: refuse a server or role that cannot."""
    with connection(conn_id, database="postgres") as conn:
        available = conn.execute(load_sql("restore/amcheck_available.sql")).fetchone()[0]
    if not available:
        raise RestoreRefused(
            f"the verification needs the amcheck extension, which the role of connection {conn_id} cannot install "
            "on that server: install the server's contrib package or use a superuser connection."
        )


def server_major(conn_id: str) -> int:
    with connection(conn_id, database="postgres") as conn:
        return pgtools.major_of_version_num(conn.execute(load_sql("restore/server_version_num.sql")).fetchone()[0])


def pg_restore_program(conn_id: str, dump_major: int | None) -> str:
    """The pg_restore that reads dumps of pg_dump `dump_major` (None: unknown) and talks to the server of `conn_id`:
    the installed version closest above both."""
    server = server_major(conn_id)
    return pgtools.client("pg_restore", at_least=max(dump_major or server, server))


def list_dump(dump: Path, program: str) -> int:
    """The number of items in the dump's table of contents; refuses a file pg_restore cannot read."""
    toc = subprocess.run([program, "--list", str(dump)], capture_output=True, text=True)
    if toc.returncode != 0:
        raise RestoreRefused(f"pg_restore cannot read the dump {dump.name}: {toc.stderr.strip()}.")
    return sum(1 for line in toc.stdout.splitlines() if line and not line.startswith(";"))


# --- pg_restore ---------------------------------------------------------------------------------------------


def create_database(conn_id: str, name: str, *, like: str | None = None) -> None:
    """Create `name` empty; `like`: an existing database whose encoding, locale and tablespace it takes (a dump
    restored without --create carries none of them)."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        options = _creation_options(conn, like) if like else sql.SQL("")
        conn.execute(load_sql("restore/create_database.sql").format(database=sql.Identifier(name), options=options))


def _creation_options(conn, like: str) -> sql.Composable:
    encoding, tablespace, row = conn.execute(load_sql("restore/database_creation.sql"), {"name": like}).fetchone()
    options = [
        sql.SQL(" ENCODING {}").format(sql.Literal(encoding)),
        sql.SQL(" LC_COLLATE {}").format(sql.Literal(row["datcollate"])),
        sql.SQL(" LC_CTYPE {}").format(sql.Literal(row["datctype"])),
        sql.SQL(" TABLESPACE {}").format(sql.Identifier(tablespace)),
    ]
    if row.get("datlocprovider") == "i":  # ICU: the locale column is daticulocale in 15-16, datlocale from 17
        icu_locale = row.get("daticulocale") or row.get("datlocale")
        options.append(sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu_locale)))
    return sql.Composed(options)


def drop_database(conn_id: str, name: str) -> None:
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        conn.execute(load_sql("restore/drop_database.sql", database=name))


def terminate_sessions(conn_id: str, database: str, timeout: timedelta) -> None:
    """Ask every other session on `database` to end and wait, bounded, until none is left."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        deadline = time.monotonic() + timeout.total_seconds()
        while True:
            asked = conn.execute(load_sql("restore/terminate_connections.sql"), {"name": database}).fetchone()[0]
            left = conn.execute(load_sql("restore/count_connections.sql"), {"name": database}).fetchone()[0]
            if left == 0:
                log.info("No session left on %s (%d terminated in the last pass)", database, asked)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} session(s) on {database} did not end within {timeout}.")
            time.sleep(0.2)


def run_pg_restore(conn_id: str, dump: Path, database: str, *, program: str, jobs: int, clean: bool) -> int:
    """pg_restore `dump` into `database` with `program`, logging each object; returns the number of TOC items.

    `clean` (in-place mode) runs as one transaction so a failure leaves the database as it was; that rules out
    parallel jobs.
    """
    env = {**os.environ, **libpq_env(conn_id, database=database)}
    total = list_dump(dump, program)
    argv = [program, "--verbose", "--exit-on-error", "--no-password", "--dbname", database]
    if clean:
        if jobs > 1:
            log.info("In-place restore runs as a single transaction, so jobs=%d is reduced to 1", jobs)
        argv += ["--clean", "--if-exists", "--single-transaction"]
    elif jobs > 1:
        argv += ["--jobs", str(jobs)]
    argv.append(str(dump))
    log.info("Running %s (%d TOC items)", " ".join(argv), total)
    started = time.monotonic()
    done = 0
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as process:
        tail: list[str] = []
        for line in process.stderr:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith(("pg_restore: creating", "pg_restore: processing data", "pg_restore: executing")):
                done += 1
                elapsed = time.monotonic() - started
                log.info("[%d/%d %.0fs] %s", min(done, total), total, elapsed, line.removeprefix("pg_restore: "))
            elif "error" in line.lower() or "warning" in line.lower():
                log.warning("%s", line)
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"pg_restore exited with {process.returncode}: " + " | ".join(tail[-5:]))
    log.info("pg_restore finished in %.1f s", time.monotonic() - started)
    return total


# --- swap ---------------------------------------------------------------------------------------------------


# Settings whose value is a list of separately quoted items (pg_dump's variable_is_guc_list_quote): their stored
# text is split back into items, every other value is set as one literal.
LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


class IdentityNotCarried(RuntimeError):
    """The restored database would not have the replaced one's owner, privileges or settings: the swap rolls back."""


def database_identity(conn, name: str) -> dict:
    """What a restore into a new database does not bring along (owner, ACL, settings, connection limit, comment),
    as plain JSON for the report; `privileges` holds the ACL one (grantor, grantee, privilege, grantable) each."""
    owner, acl, limit, comment = conn.execute(load_sql("restore/database_identity.sql"), {"name": name}).fetchone()
    privileges = conn.execute(load_sql("restore/database_privileges.sql"), {"name": name}).fetchall()
    settings = conn.execute(load_sql("restore/database_settings.sql"), {"name": name}).fetchall()
    return {
        "owner": owner,
        "acl": acl,
        "privileges": [list(row) for row in privileges],
        "settings": [{"role": role, "setting": setting} for role, setting in settings],
        "connection_limit": limit,
        "comment": comment,
    }


def describe_identity(identity: dict) -> dict:
    """The identity as the report lists it: the ACL in PostgreSQL's own notation, settings as `ALTER ... SET` would
    name them."""
    return {
        "owner": identity["owner"],
        "acl": identity["acl"] or "default privileges",
        "settings": [
            entry["setting"] if entry["role"] is None else f"{entry['role']} (role in database): {entry['setting']}"
            for entry in identity["settings"]
        ],
        "connection_limit": "none" if identity["connection_limit"] == -1 else identity["connection_limit"],
        "comment": identity["comment"],
    }


def _grantee(name: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)


def _setting_values(name: str, value: str) -> list[str]:
    """The items of a stored setting value: `"$user", public` -> ['$user', 'public'] for a list setting."""
    if name not in LIST_SETTINGS:
        return [value]
    items, item, quoted, index = [], "", False, 0
    while index < len(value):
        char = value[index]
        if char == '"' and quoted and value[index + 1 : index + 2] == '"':
            item += '"'  # a doubled quote inside a quoted item is one quote character
            index += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(item.strip())
            item = ""
        else:
            item += char
        index += 1
    items.append(item.strip())
    return items


def carry_identity(conn, identity: dict, database: str) -> None:
    """Give `database` the owner, privileges, settings, connection limit and comment of `identity` (the replaced
    database's), inside the caller's transaction."""
    target = sql.Identifier(database)
    conn.execute(load_sql("restore/set_database_owner.sql", database=database, owner=identity["owner"]))
    if identity["acl"] is not None:
        # Start from no privilege at all, then grant exactly the old ones: the owner's grants first, since a grant
        # made by another role needs the grant option the owner gave it.
        for grantee in {row[1] for row in database_identity(conn, database)["privileges"]}:
            conn.execute(
                load_sql("restore/revoke_database_privileges.sql").format(database=target, grantee=_grantee(grantee))
            )
        for grantor, grantee, privilege, grantable in sorted(
            identity["privileges"], key=lambda row: row[0] != identity["owner"]
        ):
            as_grantor = grantor != identity["owner"]
            if as_grantor:
                conn.execute(load_sql("restore/set_role.sql", role=grantor))
            conn.execute(
                load_sql("restore/grant_database_privilege.sql").format(
                    privilege=sql.SQL(privilege),
                    database=target,
                    grantee=_grantee(grantee),
                    grant_option=sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )
            if as_grantor:
                conn.execute(load_sql("restore/reset_role.sql"))
    for entry in identity["settings"]:
        name, _, value = entry["setting"].partition("=")
        parts = {
            "database": target,
            "setting": sql.Identifier(*name.split(".")),
            "values": sql.SQL(", ").join(sql.Literal(item) for item in _setting_values(name, value)),
        }
        if entry["role"] is None:
            conn.execute(load_sql("restore/set_database_setting.sql").format(**parts))
        else:
            conn.execute(
                load_sql("restore/set_role_database_setting.sql").format(role=sql.Identifier(entry["role"]), **parts)
            )
    conn.execute(
        load_sql("restore/set_connection_limit.sql").format(
            database=target, limit=sql.Literal(identity["connection_limit"])
        )
    )
    if identity["comment"] is not None:
        conn.execute(
            load_sql("restore/comment_on_database.sql").format(
                database=target, comment=sql.Literal(identity["comment"])
            )
        )


def _comparable(identity: dict) -> dict:
    # The ACL's text lists entries in the order they were granted; the privileges, sorted, are what must agree.
    return {key: value for key, value in identity.items() if key != "acl"}


def swap_databases(conn_id: str, target: str, staging: str, retired: str, drain_timeout: timedelta) -> dict:
    """Put `staging` in service as `target`, keeping the old one as `retired`; both renames or neither. The restored
    database takes the old one's identity (owner, privileges, settings, connection limit, comment) in the same
    transaction, checked before it commits; returns that identity."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        conn.execute(load_sql("restore/refuse_connections.sql", database=target))
        try:
            terminate_sessions(conn_id, target, drain_timeout)
            with conn.transaction():
                identity = database_identity(conn, target)
                carry_identity(conn, identity, staging)
                conn.execute(load_sql("restore/rename_database.sql", old=target, new=retired))
                conn.execute(load_sql("restore/rename_database.sql", old=staging, new=target))
                carried = database_identity(conn, target)
                if _comparable(carried) != _comparable(identity):
                    raise IdentityNotCarried(
                        f"the restored {target} would not keep the replaced database's identity: "
                        f"{_comparable(identity)} became {_comparable(carried)}; nothing was swapped."
                    )
        except Exception:
            conn.execute(load_sql("restore/allow_connections.sql", database=target))
            raise
    log.info(
        "Swapped: %s is now the restored database, with the replaced one's owner %s, ACL %s, %d setting(s), "
        "connection limit %s and comment %r; the previous one is kept as %s",
        target,
        identity["owner"],
        identity["acl"] or "(defaults)",
        len(identity["settings"]),
        identity["connection_limit"],
        identity["comment"],
        retired,
    )
    return identity


def rollback_instructions(target: str, retired: str) -> str:
    return (
        f"To roll back, as a superuser on the `postgres` database (scale trading-api to 0 first):\n"
        f"  ALTER DATABASE {target} RENAME TO {target}_rolled_back;\n"
        f"  ALTER DATABASE {retired} RENAME TO {target};\n"
        f"  ALTER DATABASE {target} WITH ALLOW_CONNECTIONS true;"
    )


def drop_expired_retired_databases(conn_id: str, target: str, keep: timedelta, now: datetime) -> list[str]:
    """Drop `<target>_pre_restore_<stamp>` databases older than `keep`; returns the names dropped."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        names = [row[0] for row in conn.execute(load_sql("restore/retired_databases.sql"), {"prefix": target})]
    dropped = []
    for name in names:
        try:
            stamp = datetime.strptime(name.rsplit("_", 1)[-1].upper(), RETIRED_STAMP).replace(tzinfo=now.tzinfo)
        except ValueError:
            continue
        if now - stamp > keep:
            log.info("Dropping %s, retired %s ago (policy keeps %s)", name, now - stamp, keep)
            drop_database(conn_id, name)
            dropped.append(name)
    return dropped
