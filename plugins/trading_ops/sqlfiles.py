"""SQL statements kept in include/sql/, one purpose per file.

Values are bound parameters (`%(name)s`); identifiers are `{placeholders}` filled with `psycopg.sql.Identifier`
so that a table or column name from the policy can never change the statement's meaning.
"""

from __future__ import annotations

from functools import cache

from psycopg import sql

from trading_ops.paths import SQL_DIR


@cache
def _read(name: str) -> str:
    path = (SQL_DIR / name).resolve()
    if SQL_DIR.resolve() not in path.parents:
        raise ValueError(f"SQL file {name!r} is outside {SQL_DIR}")
    return path.read_text()


def load_sql(name: str, **identifiers: str | tuple[str, ...]) -> sql.Composed | sql.SQL:
    """The statement in include/sql/<name> with each {placeholder} quoted as an identifier.

    A tuple value becomes a qualified name: ("public", "market_data") -> "public"."market_data".
    """
    statement = sql.SQL(_read(name))
    if not identifiers:
        return statement
    return statement.format(
        **{
            key: sql.Identifier(*value) if isinstance(value, tuple) else sql.Identifier(value)
            for key, value in identifiers.items()
        }
    )
