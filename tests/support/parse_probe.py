"""Parse one DAG file the way the DAG processor does, in a fresh interpreter, with tripwires on everything parsing
must not touch: connections, Variables, files and the network.

    python -m tests.support.parse_probe <dag file>     prints one JSON report line

The tripwires are installed before the DagBag imports the file, so the module-level code of everything it imports
(trading_ops included: nothing of it is loaded yet) is under them too. Airflow's own start-up (its configuration,
its modules) happens before, since the rule is about the project's code. Installed libraries may read their own
resource files (CronTriggerTimetable's description loads cron_descriptor's locale .mo), so their directories are
exempt, and so is the system's time zone database (a schedule's timezone); source and bytecode files are what an
import reads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import zoneinfo
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LIBRARY_DIRS = tuple(
    {os.path.realpath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    | {os.path.realpath(directory) for directory in zoneinfo.TZPATH}
)


class Forbidden(AssertionError):
    pass


def parse(dag_file: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook, Variable

    calls: list[str] = []
    opened: list[str] = []
    recording = False

    def refuse(what):
        def _refuse(*args, **kwargs):
            calls.append(f"{what}{args[:2]}")
            raise Forbidden(f"{what} during DAG parsing")

        return _refuse

    BaseHook.get_connection = classmethod(refuse("BaseHook.get_connection"))
    Variable.get = staticmethod(refuse("Variable.get"))
    socket.socket.connect = refuse("socket.connect")
    socket.create_connection = refuse("socket.create_connection")

    def audit(event, args):
        if recording and event == "open" and isinstance(args[0], str | bytes):
            path = os.fsdecode(args[0])
            if not path.endswith((".py", ".pyc")) and not os.path.realpath(path).startswith(LIBRARY_DIRS):
                opened.append(path)

    sys.addaudithook(audit)
    already = set(sys.modules)
    recording = True
    started = time.perf_counter()
    bag = DagBag(dag_folder=dag_file)
    seconds = time.perf_counter() - started
    recording = False
    return {
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {str(path): str(error)[-2000:] for path, error in bag.import_errors.items()},
        "calls": calls,
        "opened": opened,
        "trading_ops_modules": sorted(name for name in set(sys.modules) - already if name.startswith("trading_ops")),
        "seconds": seconds,
    }


def probe(dag_file: Path, *pythonpath: Path) -> dict:
    """The report of parsing `dag_file` in a fresh interpreter (`pythonpath` goes before the project's)."""
    path = os.pathsep.join(str(entry) for entry in (*pythonpath, ROOT, ROOT / "plugins"))
    argv = [sys.executable, "-m", "tests.support.parse_probe", str(dag_file)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(parse(sys.argv[1])))
