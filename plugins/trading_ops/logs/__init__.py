"""Log rotation for the manual's log classes (`logs.classes` in the policy): which files are due, how they are
rotated without losing a line, how archives are compressed, encrypted and sealed with a sha256 sidecar, how each
is recorded in a signed chain that proves none was deleted, altered or added since, and which archives retention
and the size cap delete.

Modules, in the order a run uses them (`run` has the order and why it is safe to interrupt):
    naming     rotated names (`<file>.<UTC stamp>[-n].zst[.age]`), what a path holds now
    writers    who has a file open for writing, pausing them, telling them to reopen
    rotate     rename + reopen or copytruncate, archiving rotated files (the no-line-lost algorithms)
    archives   writing and reading archives through the shared `trading_ops.streams`
    verify     sidecars (damage checks, computed once per run)
    chain      the signed chain of archives per class and directory, its off-host head, verifying them
    retention  retention and the size cap: plan, then apply
    report     what a run records, its dry-run listing, its alerts
    hosts      which host each path lives on, the task and queue per host, the hosts a run did not reach
    tasks      the DAG's task functions (the only module that reads Airflow's context)

Entry points:
    rotate_log_class(name, *, now, dry_run, recipients, signer, heads, policy, host) -> ClassReport
                                                                  (run.py; plain values only)
    extract_archive(path, out, keys)   decrypt + decompress an archive; archive_problem(path) checks its sidecar
    python -m trading_ops logs verify <dir> | extract <archive> | keygen   by hand (cli.py, in the main CLI)
"""
