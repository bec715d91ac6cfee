INSERT INTO {findings} (check_name, run_id, subject, severity, message, evidence, status, first_seen, waived,
                        waiver_reason, waiver_expires)
VALUES (%(check)s, %(run_id)s, %(subject)s, %(severity)s, %(message)s, %(evidence)s, %(status)s, %(first_seen)s,
        %(waived)s, %(waiver_reason)s, %(waiver_expires)s)
