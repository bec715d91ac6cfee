"""A trading writer for the maintenance tests and the benchmark: it measures what maintenance does to the inserts.

Nothing here imports the test harness (tests/conftest.py), so `bench/maintenance.py` imports it too.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

# PostgreSQL reports a wait for a lock longer than deadlock_timeout when log_lock_waits is on: "process 123 acquired
# RowExclusiveLock on relation 16384 of database 5 after 120.5 ms" (or "still waiting for ..." if it never got it).
# A wait is logged twice: "still waiting" when it passes deadlock_timeout, "acquired" when it ends.
LOCK_WAIT_LINE = re.compile(r"process (\d+) (acquired|still waiting for) .* after ([\d.]+) ms")
# Waits shorter than this are not reported; 20 ms is well below any bound a test asserts and above scheduling noise.
LOCK_WAIT_REPORTED_FROM = "20ms"


class InsertProbe(threading.Thread):
    """A trading writer: inserts one fresh bar at a time (autocommit) and records how long each insert took.

    Its session asks the server to log every lock wait of its own (it connects as a superuser), so `lock_waits_ms`
    tells a writer blocked by maintenance's locks apart from a writer slowed by a busy machine.
    """

    def __init__(self, conninfo: str, start: datetime, pause: float = 0.005):
        super().__init__(daemon=True)
        self.conninfo, self.start_at, self.pause = conninfo, start, pause
        self.latencies: list[float] = []
        self.started: list[float] = []
        self.ids: list[int] = []
        self.backend_pid: int | None = None
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                conn.execute("SET log_lock_waits = on")
                conn.execute(f"SET deadlock_timeout = '{LOCK_WAIT_REPORTED_FROM}'")
                self.backend_pid = conn.info.backend_pid
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

    def lock_waits_ms(self, server_log: Path) -> list[float]:
        """Every wait of this writer for a lock longer than LOCK_WAIT_REPORTED_FROM, as the server logged it."""
        waits, pending = [], False
        for line in server_log.read_text(errors="replace").splitlines():
            match = LOCK_WAIT_LINE.search(line)
            if match and int(match.group(1)) == self.backend_pid:
                if pending:  # the end of the wait whose start was the line before: its whole length replaces it
                    waits.pop()
                waits.append(float(match.group(3)))
                pending = match.group(2) != "acquired"
        return waits
