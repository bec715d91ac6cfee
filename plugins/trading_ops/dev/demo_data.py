"""The manual's schema and realistic demo data, for `make up` and the tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from trading_ops.sqlfiles import load_sql

DEMO_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "META", "005930.KS", "000660.KS", "035420.KS")


def create_schema(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(load_sql("schema/create_trading_schema.sql"))


def load_demo_data(
    conn: psycopg.Connection,
    *,
    end: datetime,
    months: int = 12,
    step: timedelta = timedelta(hours=1),
    symbols: tuple[str, ...] = DEMO_SYMBOLS,
    order_step: timedelta = timedelta(hours=6),
) -> int:
    """Fill market_data with bars for `months` months before `end`; returns the number of market_data rows."""
    start = end - timedelta(days=round(months * 30.44))
    params = {"symbols": list(symbols), "start": start, "stop": end, "step": step, "exchange": "DEMO"}
    with conn.transaction():
        conn.execute(load_sql("demo/insert_instruments.sql"), params)
        rows = conn.execute(load_sql("demo/insert_market_data.sql"), params).rowcount
        conn.execute(load_sql("demo/insert_orders.sql"), {**params, "step": order_step})
    conn.execute("ANALYZE")
    return rows
