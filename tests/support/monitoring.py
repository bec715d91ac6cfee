"""Evaluation times of the monitoring tests: a fixed first run and the minutes after it, as system_health passes
each run's time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)
