"""The Ops page: what the SRE and DBA team most need to know, on one page of the Airflow UI ("Trading ops").

It decides nothing of its own. Each section is one function of `sections` (the policy and the moment -> plain,
JSON-ready data) and one template (templates/sections/<name>.html); `SECTIONS` lists them in page order. Every
number comes from the function the CLI and the DAGs use: the recoverable window of `restore.pitr` (`backups
window`), the catalog of `backup` with the drills of `restore.drill` (`backups list`, `drills list`), the RPO age
of `monitoring.collect` (system_health's freshness metric), the rule states of `monitoring.state`, the open
incidents of `incidents.open_incidents` with the escalation step of `incidents.response`, the findings
history of `security.findings` (security and capacity checks alike) and the retention plan of `logs.retention`.

`app` is the FastAPI app the Airflow plugin (plugins/ops_page.py) mounts: the page and its JSON, every route behind
Airflow's own authentication. The page is read-only: it offers no action.
"""
