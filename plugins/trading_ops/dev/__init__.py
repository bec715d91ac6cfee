"""What serves only `make up` and the tests, never production: production code imports nothing from here.

It decides how a local system is put together: a throwaway PostgreSQL cluster archiving WAL (`localpg`), the
manual's schema with demo data (`demo_data`), Airflow standalone driven over the REST API (`standalone`), the
policy of a local run (`local_policy`), and a local Slack/PagerDuty sink for the alerts (`alert_sink`).

Entry points: `python -m trading_ops.dev up|down|alerts` (`environment`), `LocalCluster`, `AirflowStandalone`,
`write_local_policy`.
"""
