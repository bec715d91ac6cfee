"""What Airflow's plugin manager loads from a plugins folder, observed in a fresh interpreter.

The manager imports every .py it finds under its bare file name (`tasks`, `catalog`, ...) into `sys.modules`, so
what it loaded is visible only in a process that has not imported those names otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, sys
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
folder = os.path.realpath(sys.argv[1])
bare = {
    name: module.__file__
    for name, module in list(sys.modules.items())
    if not name.startswith("trading_ops")
    and os.path.realpath(getattr(module, "__file__", None) or "/").startswith(folder + os.sep)
}
print(json.dumps({"bare": bare, "errors": plugins_manager.get_import_errors()}))
"""


def load_plugins(plugins_folder: Path, syntax: str = "glob") -> tuple[dict[str, str], dict[str, str]]:
    """After the plugin manager loaded `plugins_folder` with `[core] dag_ignore_file_syntax = syntax`: the modules
    it imported from there under a name other than trading_ops.* (name -> file), and its import errors."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "plugins"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": syntax,
    }
    argv = [sys.executable, "-c", _PROBE, str(plugins_folder)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["bare"], report["errors"]
