"""The wing's command line, for the hands-on step of the runbook: converting the tables to the monthly layout.

    python -m trading_ops.maintenance convert --dry-run   # the partitions and indexes it would make; changes nothing
    python -m trading_ops.maintenance convert             # market_data, then market_data_archive

Pause the db_maintenance DAG first: its archive must not run during the conversion. It needs the Airflow connection
of `maintenance.conn_id` (e.g. `AIRFLOW_CONN_TRADING_DB`) and the policy.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime

from trading_ops.errors import UserError
from trading_ops.maintenance.conversion import convert_to_partitioned
from trading_ops.maintenance.partitions import add_months, month_start
from trading_ops.maintenance.session import maintenance_session
from trading_ops.policy import load_policy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trading_ops.maintenance", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert the source and archive tables to monthly partitions")
    convert.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_policy().maintenance
    # The clock, not a run's time: this command is no DAG run, and it makes partitions for the months the writers
    # are about to use, counted from today.
    through = add_months(month_start(datetime.now(UTC)), cfg.archive.premake_partitions)
    try:
        with maintenance_session(cfg) as conn:
            for table, until in ((cfg.archive.source_table, through), (cfg.archive.archive_table, None)):
                plan = convert_to_partitioned(conn, cfg, table, through=until, dry_run=args.dry_run)
                print(json.dumps(asdict(plan), default=str))
    except UserError as refused:
        parser.exit(1, f"{refused}\n")
