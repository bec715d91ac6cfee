"""A trading writer for the maintenance tests and the benchmark: it measures what maintenance does to the inserts.

Nothing here imports the test harness (tests/conftest.py), so `bench/maintenance.py` imports it too.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import psycopg


class InsertProbe(threading.Thread):
    """A trading writer: inserts one fresh bar at a time (autocommit) and records how long each insert took."""

    def __init__(self, conninfo: str, start: datetime, pause: float = 0.005):
        super().__init__(daemon=True)
        self.conninfo, self.start_at, self.pause = conninfo, start, pause
        self.latencies: list[float] = []
        self.started: list[float] = []
        self.ids: list[int] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                while not self.stopping.is_set():
                    moment = self.start_at + timedelta(seconds=len(self.ids))
                    started = time.perf_counter()
                    (new_id,) = conn.execute(
                        'INSERT INTO market_data (symbol, "timestamp", open, high, low, close, volume)'
                        " VALUES ('AAPL', %s, 100, 101, 99, 100.5, 1000) RETURNING id",
                        (moment,),
                    ).fetchone()
                    self.latencies.append(time.perf_counter() - started)
                    self.started.append(started)
                    self.ids.append(new_id)
                    time.sleep(self.pause)
        except BaseException as exc:  # re-raised by stop() in the caller's thread
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        if self.error:
            raise self.error

    @property
    def worst_ms(self) -> float:
        return max(self.latencies) * 1000

    @property
    def worst_started(self) -> float:
        return self.started[self.latencies.index(max(self.latencies))]
