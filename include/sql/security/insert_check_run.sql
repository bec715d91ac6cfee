INSERT INTO {runs} (check_name, run_id, dag_id, checked_at, new_count, persisting_count, resolved_count,
                    waived_count, resolved)
VALUES (%(check)s, %(run_id)s, %(dag_id)s, %(checked_at)s, %(new_count)s, %(persisting_count)s,
        %(resolved_count)s, %(waived_count)s, %(resolved)s)
