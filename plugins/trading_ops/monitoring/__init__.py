"""Monitoring decides whether the platform is healthy right now, and when a condition (or missing data) has lasted
long enough to alert: metrics from the platform's hosts (node-exporter through Prometheus; psutil on the worker
only as a labelled single-host fallback), PostgreSQL, the application and the freshness of backups and WAL; the
manual's thresholds and alert rules with their `for` and `no_data`; their state between runs in the ops state
database; and the dead man's switch. Delivery is `trading_ops.alerting`'s.

Entry points
    tasks.*    the system_health DAG's tasks (collect_host_metrics, collect_postgres_metrics,
               collect_application_metrics, collect_freshness_metrics, evaluate_alert_rules, ping_heartbeat)
    collect.collect_host_metrics / collect_postgres_metrics / collect_application_metrics /
        collect_freshness_metrics -> {metric: value | {series: value}}, collect.merge_metrics, collect.missing_sources
    rules.all_rules(policy) -> [Rule]   the policy's alert rules, then every threshold and freshness limit;
        rules.rule_table(policy)  the runbook's table
    state.check_system_health(policy, metrics, at, run_url, missing) -> summary   advance every check to `at`, send
        what fired (or went without data), resolve what cleared
    heartbeat.ping(conn_id, run_id, timeout)
"""
