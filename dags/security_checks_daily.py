"""
# security_checks_daily

The manual's daily security checks (section 6): known vulnerabilities in what is installed, the authentication
logs of the last day, and failed logins. Every check is its own task; each stores its findings in the findings
history (`ops.security_findings`, database of `security.findings_conn_id`), compares them with its previous run
and alerts by severity (critical -> P1, warning -> P2, info -> P3) through the alerting layer.
Alerts carry a link to the check's task. When a severity that alerted has no active findings left (fixed or
waived), the next run resolves its alert under the same dedup key (`security:<check>:<severity>`), which closes
the PagerDuty incident of a critical finding.

**Schedule**: every day at 02:00 Asia/Seoul. Manual runs review the day before the
moment they are triggered.

## Tasks
- `scan_vulnerabilities` (`vulnerability_scan`): pip-audit `--strict` over the pinned requirement files
  (`security.requirement_files`) and the worker's installed packages, against the OSV database of the `osv_api`
  connection (host `https://api.osv.dev`). One finding per package and advisory, subject `<package> <advisory id>`:
  critical when a fixed release exists (upgrade now), warning when none does yet.
- `review_auth_logs` (`auth_log_review`): sshd/sudo (`security.auth_logs.ssh_paths`) and PostgreSQL connection
  logs (`postgres_paths`, `log_connections = on`) of the last `window`. Info: successful logins per service, user
  and source (a new user/source pair shows as new). Critical: ssh root logins, ssh logins without a public key,
  sudo by users outside the roles allowed to sudo (the developer role is read_only). Warning: ssh logins with a
  public key but no second factor, ssh users the policy does not list, refused sudo, PostgreSQL logins by a method
  outside `postgres_allowed_methods` (`trust` when no `connection authenticated` line was logged).
- `count_failed_logins` (`failed_login_attempts`): failed ssh and PostgreSQL authentications of the `window` per
  source and per user; warning/critical at `security.failed_logins` thresholds; one source failing as
  `brute_force_users_per_source` or more different users is a critical brute-force finding.
- `summarize_findings`: a table of every check's counts (critical, warning, info, new, resolved, waived) in the
  log and in XCom; it runs even when a check failed and then fails the run, naming the check.

A check that cannot read its source (OSV or a log file unreachable, pip-audit skipping a package) FAILS: it
never reports "no findings" for something it could not look at.
A check the policy disables (`security.disabled_checks`, only on a developer machine: `make up` disables what
it lacks) is skipped with the sentence saying what it needs, and the summary lists it as disabled.

## Waiving a finding (accepted risk)
Copy the check and subject from the summary or the task log into `security.waivers` in
`include/config/ops_policy.yaml`, with the reason and an expiry date:
`- {check: vulnerability_scan, subject: "jinja2 GHSA-q2x7-8rv6-6q7h", reason: "sandbox unused (SEC-42)",
expires: 2027-01-31}`. A waived finding is still recorded (`waived = true`) but not alerted; from the expiry date
on it reports again, marked "waiver expired".

## Idempotency
A retry or a cleared task replaces what the earlier try recorded for the same run id; the comparison is always
with the latest earlier run of the check (by run time), so rerunning yesterday's run gives yesterday's answer.
Log windows end at the run's logical date (or run_after for manual runs), never at "now".

## Triage
- A check task failed: its log's last line names the source it could not read (connection `osv_api`, a log path,
  pip-audit's error). Fix access and clear the task; `summarize_findings` fails with it and clears with it.
- Findings: `SELECT * FROM ops.security_findings WHERE run_id = '<run id>' ORDER BY severity;` —
  `ops.security_check_runs.resolved` lists what went away. Critical vulnerabilities: upgrade the pin in
  requirements.txt. Brute force: block the source at the firewall. Root or password logins: disable them in sshd
  (security_checks_monthly reviews sshd) and find who logged in.

## Owner
sre-dba (security findings are triaged with the security officer).

## Recovery
Nothing is changed on any system: the checks only read. Deleting `ops.security_check_runs` rows of a check makes
its next run report everything as new.
"""

from datetime import UTC, datetime

from airflow.sdk import dag

from trading_ops.dag_defaults import cron, default_args
from trading_ops.security.tasks import security_checks


@dag(
    description="Daily security checks: known vulnerabilities, the authentication logs, failed logins.",
    schedule=cron("0 2 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["security", "daily"],
    doc_md=__doc__,
)
def security_checks_daily():
    security_checks("daily")


security_checks_daily()
