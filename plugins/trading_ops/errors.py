"""The project's errors, and the one rule every task follows with them.

`UserError` is a failure a person can fix and a retry cannot: a bad trigger-form value, an invalid policy, a missing
or damaged backup asked for by name, a plan the checks refused, a missing key or tool. It subclasses Airflow's
`AirflowFailException`, so wherever it is raised the task fails at once, without retries, with the error's one
sentence (the message is written for the person reading the task log or the alert). The failure callback sends it
to the DAG's info channel and never pages: it is not an incident.

Every wing's own errors of that kind subclass `UserError`; everything else (a server that went away, a tool that
crashed, a verification that found damage in a backup just taken) is an operational failure: it is retried and
alerts at the DAG's incident level.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException


class UserError(AirflowFailException):
    """A problem the user can fix; its message is one sentence that says what is wrong and where."""
