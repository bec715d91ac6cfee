"""Monitoring decides whether the platform is healthy right now, and when a condition has lasted long enough to
alert: metrics from the host, PostgreSQL and the application, the manual's thresholds and alert rules with their
`for`, and their state between runs. Delivery is `trading_ops.alerting`'s.

Entry points
    tasks.*    the system_health DAG's tasks (collect_host_metrics, collect_postgres_metrics,
               collect_application_metrics, evaluate_alert_rules)
    collect.collect_host_metrics / collect_postgres_metrics / collect_application_metrics -> {metric: value},
        collect.missing_sources
    rules.all_rules(policy) -> [Rule]   the policy's alert rules, then the thresholds they leave to system_health
    state.check_system_health(policy, metrics, at, run_url, missing) -> summary   advance every rule to `at`, send
        what fired, resolve what cleared
"""
