"""Incidents decide what an alert becomes once it is an incident: which incident it opens or joins, its level and
deadlines, who is asked to acknowledge and when the chain escalates, what a status report, a recovery and a
post-mortem record, and when a missed resolution deadline is itself an alert one level up. The manual's section 4.

Every P1, P2 or P3 alert (a rule firing, a DAG failure at its level, a security finding; never a user-error notice)
opens an incident in the ops state database, or joins the open one of its dedup key (`store.record_alert`, called by
`alerting.send_alert`, the one place alerts are delivered); its resolution (`alerting.resolve_alert`) records that
the triggering condition cleared. An incident has its level, opened/acknowledged/resolved times, response and
resolution deadlines from `incident_levels`, the escalation position, the owner and a timeline of every event.

P3 incidents are recorded and resolved with their alert: no human steps. P1 and P2 incidents get one
incident_response run each (started by incident_tracker), whose questions (Browse -> Required Actions) are asked of
the Airflow users `incidents.roles` maps the escalation chain's roles to: acknowledge, status reports until the
condition clears, recovery confirmed, then the post-mortem draft.

Entry points
    store.record_alert / store.record_resolution   the alerting hooks (never raise)
    open_incidents(policy) -> [dict]   the open incidents as plain dicts (JSON-ready), newest first
    store.list_incidents / store.show_incident   the CLI's `incidents list|show`
    tracker.check(policy, at)   incident_tracker: overdue resolutions alerted one level up, runs to start
    response.*   incident_response's steps; operators.* its questions; tasks.* its other tasks
    postmortem.draft(incident, events, policy) -> markdown
"""


def open_incidents(policy) -> list[dict]:
    """The open incidents, newest first, as plain JSON-ready dicts (times in ISO 8601), e.g. for the Ops page."""
    # Imported here: the DAG files import this package's operators while parsing, which must stay light.
    from trading_ops.incidents.store import open_incidents as from_store

    return from_store(policy)
