"""Throwaway Redis servers on 127.0.0.1 for the tests and `make up`: one per cache of the policy, as in production.

Debian's `redis-server` (installed by scripts/bootstrap.sh) runs daemonized with a password, bound to 127.0.0.1,
without persistence; `stop` sends SIGTERM to the pid it wrote. `LocalRedis.connection_json()` is the
`AIRFLOW_CONN_<ID>` value of a `redis` connection to it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from trading_ops.dev.localpg import free_port


@dataclass
class LocalRedis:
    base_dir: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def pidfile(self) -> Path:
        return self.base_dir / "redis.pid"

    def _pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self, timeout: float = 10) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/bootstrap.sh (Debian package redis-server).")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "redis.conf"
        # The password goes in a 0600 file, never on a command line.
        config.touch(0o600)
        config.write_text(
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\ndaemonize yes\n"
            f"pidfile {self.pidfile}\nlogfile {self.base_dir / 'redis.log'}\ndir {self.base_dir}\n"
            'save ""\nappendonly no\n'
        )
        subprocess.run([binary, str(config)], check=True, stdin=subprocess.DEVNULL)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.base_dir / 'redis.log'}.") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True)

    def connection_json(self) -> str:
        return json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "password": self.password})
