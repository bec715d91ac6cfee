-- A retried or cleared task replaces what its earlier try recorded (findings go with the run row).
DELETE FROM {runs} WHERE check_name = %(check)s AND run_id = %(run_id)s
