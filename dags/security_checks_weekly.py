"""
# security_checks_weekly

The manual's weekly security checks (section 6): outdated dependencies, TLS certificates and protocols, firewall
rules. Every check is its own task; each stores its findings in the findings history (`ops.security_findings`,
database of `security.findings_conn_id`), compares them with its previous run and alerts by severity
(critical -> P1, warning -> P2, info -> P3) through the alerting layer.
Alerts carry a link to the check's task. When a severity that alerted has no active findings left (fixed or
waived), the next run resolves its alert under the same dedup key (`security:<check>:<severity>`), which closes
the PagerDuty incident of a critical finding.

**Schedule**: Mondays at 04:00 Asia/Seoul.

## Tasks
- `check_dependency_updates` (`dependency_updates`): every `name==version` pin of `security.requirement_files`
  against the newest release (not a pre-release, not yanked) on the PyPI JSON API of the `package_index`
  connection (host `https://pypi.org`). Info: outdated. Warning: outdated and the pinned version has advisories
  in OSV (`osv_api`); a package the index does not know; a requirement that is not pinned. Subject: the package.
- `check_ssl_certs` (`ssl_cert_check`): each of `security.tls.endpoints` (host, port, `starttls: postgres` for
  PostgreSQL, which negotiates TLS after an SSLRequest). Critical: certificate expired or expiring within
  `critical_days` (7), chain not trusted (`ca_file` or the system store), certificate not naming the host, no TLS
  offered (passwords cross the network in clear text; penetration_test rates it the same). Warning: expiring
  within `warning_days` (30), protocol versions below `min_version` (TLS 1.2) accepted. Subjects:
  `<host>:<port> certificate expiry|certificate chain|hostname|protocol|tls`.
- `review_firewall_rules` (`firewall_rule_review`): the host rules printed by `security.firewall.command`
  (`nft -j list ruleset`, or `iptables-save` with `format: iptables-save`; prefix `ssh <host>` to read another
  host) and the NetworkPolicies of the workload's namespace through `kubernetes_default`. Critical: an allow from
  any address to a `protected_ports` port (PostgreSQL, ssh, the Kubernetes and Airflow APIs), a NetworkPolicy
  admitting every source to one. Warning: allows not in `baseline`, baseline allows that are gone, an input chain
  whose default policy accepts, baseline NetworkPolicies missing, NetworkPolicies not in the baseline.
- `summarize_findings`: a table of every check's counts in the log and in XCom; it runs even when a check failed
  and then fails the run, naming the check.

A check that cannot read its source (index or OSV unreachable, an endpoint that does not answer, the firewall
command failing, the Kubernetes API unreachable) FAILS: it never reports "no findings" for what it could not see.
A check the policy disables (`security.disabled_checks`, only on a developer machine: `make up` disables what
it lacks) is skipped with the sentence saying what it needs, and the summary lists it as disabled.

## Waiving a finding (accepted risk)
Add the check and subject (from the summary or the task log) to `security.waivers` in
`include/config/ops_policy.yaml` with a reason and an expiry date:
`- {check: ssl_cert_check, subject: "legacy-gw:443 protocol", reason: "vendor appliance, replaced in Q1 (CHG-7)",
expires: 2027-03-31}`. The finding stays in the history as waived and raises no alert until the expiry date,
when it reports again marked "waiver expired".

## Idempotency
A retry or a cleared task replaces what the earlier try recorded for the same run id, and compares with the
latest earlier run of the check, so reruns give the same new/persisting/resolved answer. Certificate days are
counted from the run's logical date (run_after for manual runs).

## Triage
- A check task failed: the last log line names the unreachable source (connection, endpoint, command). Fix it
  and clear the task; `summarize_findings` fails with it and clears with it.
- Expiring certificate: renew it before `critical_days`; chain or hostname findings break clients now.
- Any-source allow on a protected port: restrict the rule to the admin network (`10.20.0.0/16` in the
  baseline) or remove it; update `security.firewall.baseline` only for an approved change.
- Findings of a run: `SELECT * FROM ops.security_findings WHERE run_id = '<run id>' ORDER BY severity;`.

## Owner
sre-dba (security findings are triaged with the security officer).

## Recovery
The checks only read; nothing is changed on any system.
"""

from datetime import UTC, datetime

from airflow.sdk import dag

from trading_ops.dag_defaults import cron, default_args
from trading_ops.security.tasks import security_checks


@dag(
    description="Weekly security checks: dependency updates, TLS certificates, firewall rules.",
    schedule=cron("0 4 * * 1"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["security", "weekly", "kubernetes"],
    doc_md=__doc__,
)
def security_checks_weekly():
    security_checks("weekly")


security_checks_weekly()
