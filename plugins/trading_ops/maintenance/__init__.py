"""Database maintenance of trading_db (the manual's section 3): what to archive, analyze and rebuild, and how to do it
without blocking the trading writers or losing a row.

What the wing decides
- The archive cutoff (the run's time minus `archive.retention_months`, never the clock) and how old rows move: whole
  monthly partitions where the layout allows, otherwise batches of about `batch_size` rows, one transaction each
  (`archive`, `batches`).
- The monthly partition layout: which partitions exist, the months premade ahead, and the one-off conversion of an
  unpartitioned table to it (`partitions`, `conversion`).
- Which tables are analyzed and which indexes rebuilt: those of every user schema, as the manual's
  `ANALYZE VERBOSE` and `REINDEX DATABASE` do, or of the policy's `maintenance.schemas` only (`analyze`, `reindex`).
- How every statement waits for its locks: bounded by lock_timeout, retried with backoff (`session`).

Entry points
- `tasks`: the db_maintenance DAG's tasks, the only module that reads Airflow's context.
- `plan.plan_maintenance`, `partitions.create_future_partitions`, `archive.archive_old_rows`,
  `analyze.analyze_tables`, `reindex.reindex_indexes`: each `(conn, cfg, ...)` on a `session.maintenance_session`;
  every step but the plan takes `dry_run` (log what it would do, change nothing).
- `conversion.convert_to_partitioned` and its command: `python -m trading_ops.maintenance convert [--dry-run]`.
"""

from __future__ import annotations

from trading_ops.errors import UserError


class MaintenanceError(RuntimeError):
    """A maintenance step did not complete (a statement kept failing): an operational failure, retried."""


class MaintenanceRefused(UserError):
    """The policy and the database do not fit together: the run stops before any change, with one sentence."""
