"""The restore wing's tasks: the only modules of the wing that touch Airflow's context (the run's params, time,
user and XCom), handing plain values to the rest of the wing.

    db_restore         the db_restore DAG's tasks
    approval           its approval task, a Human-in-the-loop ApprovalOperator (the DAG file imports the class
                       while parsing, so this package imports nothing of its own)
    db_restore_drill   the db_restore_drill DAG's tasks
"""
