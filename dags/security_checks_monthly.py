"""
# security_checks_monthly

The manual's monthly security checks (section 6): an automated penetration test of the policy's targets, a review
of the security settings of PostgreSQL, sshd and Airflow, and an audit of access rights in PostgreSQL and
Kubernetes against the access-control policy. Every check is its own task; each stores its findings in the
findings history (`ops.security_findings`), compares them with its previous run and alerts by severity
(critical -> P1, warning -> P2, info -> P3) through the alerting layer.
Alerts carry a link to the check's task. When a severity that alerted has no active findings left (fixed or
waived), the next run resolves its alert under the same dedup key (`security:<check>:<severity>`), which closes
the PagerDuty incident of a critical finding.

**Schedule**: the 1st of every month at 05:00 Asia/Seoul.

## Tasks
- `probe_attack_surface` (`penetration_test`): ONLY the hosts in `security.penetration_test.targets`, only on
  `probe_ports`. Warning: a port open outside the target's `allowed_ports`; TLS below the minimum on its
  PostgreSQL/TLS ports. Critical: no TLS at all on them (passwords cross the network in clear text; the same
  severity as ssl_cert_check gives an endpoint without TLS); PostgreSQL accepting a login with a random password
  (trust) or with one of `default_credentials`; an Airflow API (`airflow_api_urls`, https verified against
  `security.tls.ca_file`) listing DAGs without credentials. The probe's failed logins show up in the next
  failed_login_attempts run from the worker's address: that is expected.
- `review_security_policy` (`security_policy_review`): PostgreSQL settings (`postgres_settings`: ssl,
  password_encryption = scram-sha-256, log_connections; `ssl` off is critical, others warning) and
  `pg_hba_file_rules` (trust for a host: critical, warning for loopback; cleartext password: warning; md5: info;
  lines in error: warning); sshd (`sshd_command`, `sshd -T`): PasswordAuthentication yes and PermitRootLogin yes
  are critical, root by key only is a warning, AuthenticationMethods not pairing publickey with a second factor
  is a warning; Airflow: every visitor admin (simple auth manager all_admins) or a weak `[api] secret_key` /
  `[api_auth] jwt_secret` is critical, `expose_config` on or no `fernet_key` is a warning.
- `audit_access_rights` (`access_right_audit`): PostgreSQL roles of `postgres_conn_id` against
  `security.access_audit.postgres` (superusers outside the list: critical; unlisted login roles, CREATEROLE or
  BYPASSRLS, unlisted memberships, table privileges outside `table_privileges`: warning; membership in a
  superuser or pg_*_server_* role and writes granted to PUBLIC: critical), and Kubernetes ClusterRoleBindings and
  RoleBindings through `kubernetes_default` against `access_control.kubernetes` (cluster-admin only for
  devops-lead; developer for dev-team only in dev and staging): every binding the policy does not grant is
  critical cluster-wide and a warning in a namespace (a policy role held by another subject or outside its
  namespaces; any other role bound cluster-wide to anyone, or in a namespace to a user or group). The policy's
  roles are ClusterRoles: a namespaced Role named `cluster-admin` is not the policy's cluster-admin. A namespaced
  binding of another role to a service account is the workload's own RBAC and is not reviewed; a policy grant
  without a binding is info.
- `summarize_findings`: a table of every check's counts in the log and in XCom; it runs even when a check failed
  and then fails the run, naming the check.

A check that cannot reach its source (a target down or unresolvable, the database, the sshd command, the
Kubernetes API) FAILS: it never reports "no findings" for what it could not see.
A check the policy disables (`security.disabled_checks`, only on a developer machine: `make up` disables what
it lacks) is skipped with the sentence saying what it needs, and the summary lists it as disabled.

## Waiving a finding (accepted risk)
Add the check and subject (from the summary or the task log) to `security.waivers` in
`include/config/ops_policy.yaml` with a reason and an expiry date:
`- {check: access_right_audit, subject: "postgresql login role etl_batch", reason: "migration until March
(CHG-88)", expires: 2027-04-01}`. The finding stays in the history as waived and is not alerted until the
expiry date, when it reports again marked "waiver expired".

## Idempotency
A retry or a cleared task replaces what the earlier try recorded for the same run id and compares with the
latest earlier run of the check. The penetration test only connects and logs in; it writes nothing.

## Triage
- A check task failed: the last log line names the source. A target "none of its allowed ports answered" is
  down or firewalled from the worker: the probe cannot tell which, so it refuses to report.
- Passwordless or default-password PostgreSQL logins: fix pg_hba.conf or the password at once (P1).
- Unexpected superuser, login role or grant: revoke it (`ALTER ROLE ... NOSUPERUSER`, `REVOKE ...`) or add it to
  the policy after review. Kubernetes bindings: delete the binding or change the policy after review.
- Findings of a run: `SELECT * FROM ops.security_findings WHERE run_id = '<run id>' ORDER BY severity;`.

## Owner
sre-dba (security findings are triaged with the security officer).

## Recovery
Nothing is changed on any system by these checks.
"""

from datetime import UTC, datetime

from airflow.sdk import dag

from trading_ops.dag_defaults import cron, default_args
from trading_ops.security.tasks import security_checks


@dag(
    description="Monthly security checks: penetration test, security policy review, access-right audit.",
    schedule=cron("0 5 1 * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["security", "monthly", "database", "kubernetes"],
    doc_md=__doc__,
)
def security_checks_monthly():
    security_checks("monthly")


security_checks_monthly()
