"""python -m trading_ops.dev up | down | alerts   (and `alert-sink DIR`, the process `up` starts)."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from trading_ops.dev import environment

    commands = {"up": environment.up, "down": environment.down, "alerts": environment.alerts}
    if len(argv) == 2 and argv[0] == "alert-sink":
        from trading_ops.dev.alert_sink import serve

        serve(Path(argv[1]))
    elif len(argv) == 1 and argv[0] in commands:
        commands[argv[0]]()
    else:
        sys.exit("usage: python -m trading_ops.dev up|down|alerts")


if __name__ == "__main__":
    main(sys.argv[1:])
