"""trading-ops: the operations of the trading platform's PostgreSQL, as plain functions the DAGs call."""

__version__ = "0.1.0"
