"""access_right_audit: PostgreSQL roles and grants, and Kubernetes RBAC, against the access-control policy.

PostgreSQL (`postgres_conn_id`): a superuser outside `superusers` is critical; a login role outside `login_roles`,
CREATEROLE or BYPASSRLS on a non-superuser, a membership the policy does not list and a table privilege outside
`table_privileges` are warnings (membership in a superuser role or in pg_read_server_files,
pg_write_server_files, pg_execute_server_program is critical; so is a write privilege granted to PUBLIC).

Kubernetes (`kubernetes.conn_id`): ClusterRoleBindings and RoleBindings against the manual's roles
(`access_control.kubernetes`). Every binding the policy does not grant is critical cluster-wide and a warning in
one namespace: a policy role bound to a subject it does not list, a namespaced policy role bound cluster-wide or
in another namespace, and any other role bound cluster-wide to anyone, or in a namespace to a user or group. The
policy's roles are ClusterRoles; a namespaced Role of the same name stands for a policy role only when that role
is limited to namespaces, so a Role called `cluster-admin` is not the cluster's cluster-admin. A namespaced
binding of another role to a service account is the workload's own RBAC and is not reviewed. A policy grant with
no binding is info. Built-in subjects (`kubernetes_ignored_subject_prefixes`) and service accounts of
`kubernetes_ignored_namespaces` are the cluster's own and are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from trading_ops.db import connection
from trading_ops.policy import Policy
from trading_ops.security.findings import Finding
from trading_ops.security.sources import read_kubernetes
from trading_ops.sqlfiles import load_sql

CHECK = "access_right_audit"
_SERVER_ACCESS_ROLES = {"pg_read_server_files", "pg_write_server_files", "pg_execute_server_program"}
_WRITE_PRIVILEGES = {"INSERT", "UPDATE", "DELETE", "TRUNCATE"}


def audit_postgres(conn, policy: Policy) -> list[Finding]:
    expected = policy.security.access_audit.postgres
    findings = []
    roles = {row[0]: row for row in conn.execute(load_sql("security/select_roles.sql"))}
    superusers = {name for name, row in roles.items() if row[1]}
    for name, (_, is_super, can_login, create_role, bypass_rls) in roles.items():
        if is_super and name not in expected.superusers:
            findings.append(
                Finding(
                    CHECK,
                    "critical",
                    f"postgresql superuser {name}",
                    f"{name} is a PostgreSQL superuser; the policy allows only {', '.join(expected.superusers)}",
                    {"role": name},
                )
            )
        if can_login and name not in expected.login_roles:
            findings.append(
                Finding(
                    CHECK,
                    "warning",
                    f"postgresql login role {name}",
                    f"{name} can log in to PostgreSQL but is not one of the policy's login roles",
                    {"role": name},
                )
            )
        for attribute, held in (("CREATEROLE", create_role), ("BYPASSRLS", bypass_rls)):
            if held and not is_super:
                findings.append(
                    Finding(
                        CHECK,
                        "warning",
                        f"postgresql role {name} {attribute}",
                        f"{name} has {attribute} without being a policy superuser",
                        {"role": name, "attribute": attribute},
                    )
                )
    for member, role in conn.execute(load_sql("security/select_role_memberships.sql")):
        if role in expected.memberships.get(member, []):
            continue
        dangerous = role in superusers or role in _SERVER_ACCESS_ROLES
        findings.append(
            Finding(
                CHECK,
                "critical" if dangerous else "warning",
                f"postgresql membership {member} in {role}",
                f"{member} is a member of {role}"
                + (", which reaches the server's files or superuser powers" if dangerous else "")
                + ", which the policy does not list",
                {"member": member, "role": role},
            )
        )
    granted: dict[tuple[str, str], list[str]] = defaultdict(list)
    for schema, table, grantee, privilege in conn.execute(
        load_sql("security/select_table_grants.sql"), {"schemas": expected.schemas}
    ):
        if grantee in superusers or privilege in expected.table_privileges.get(grantee, []):
            continue
        granted[(grantee, privilege)].append(f"{schema}.{table}")
    for (grantee, privilege), tables in sorted(granted.items()):
        public_write = grantee == "PUBLIC" and privilege in _WRITE_PRIVILEGES
        findings.append(
            Finding(
                CHECK,
                "critical" if public_write else "warning",
                f"postgresql grant {privilege} to {grantee}",
                f"{grantee} holds {privilege} on {len(tables)} table(s) ({', '.join(tables[:5])}"
                + (", ..." if len(tables) > 5 else "")
                + "), which the policy does not grant",
                {"grantee": grantee, "privilege": privilege, "tables": tables},
            )
        )
    return findings


def _subject_name(subject) -> str:
    if subject.kind == "ServiceAccount":
        return f"system:serviceaccount:{subject.namespace}:{subject.name}"
    return subject.name


def audit_kubernetes(cluster_bindings: list, namespaced_bindings: list, policy: Policy) -> list[Finding]:
    """Findings for RBAC bindings (kubernetes client models of ClusterRoleBinding and RoleBinding)."""
    audit = policy.security.access_audit
    entries = {entry.role: entry for entry in policy.security.access_control.kubernetes}
    policy_users = {user for entry in entries.values() for user in entry.users}
    findings = []
    granted: set[tuple[str, str, str | None]] = set()

    def ignored(subject) -> bool:
        if subject.kind == "ServiceAccount":
            return subject.namespace in audit.kubernetes_ignored_namespaces
        return any(subject.name.startswith(prefix) for prefix in audit.kubernetes_ignored_subject_prefixes)

    def policy_entry(role_ref):
        entry = entries.get(role_ref.name)
        if entry is None or (role_ref.kind == "Role" and entry.namespaces is None):
            return None
        return entry

    bindings = [(b, None) for b in cluster_bindings] + [(b, b.metadata.namespace) for b in namespaced_bindings]
    for binding, namespace in bindings:
        role_ref = binding.role_ref
        entry = policy_entry(role_ref)
        role = role_ref.name if role_ref.kind == "ClusterRole" else f"Role {role_ref.name}"
        scope = f"in namespace {namespace}" if namespace else "cluster-wide"
        where = f"{'RoleBinding ' + namespace + '/' if namespace else 'ClusterRoleBinding '}{binding.metadata.name}"
        severity = "warning" if namespace else "critical"
        for subject in binding.subjects or []:
            if ignored(subject):
                continue
            name = _subject_name(subject)
            evidence = {
                "binding": where,
                "role": role_ref.name,
                "role_kind": role_ref.kind,
                "subject_kind": subject.kind,
                "subject": name,
            }
            if entry is None:
                if namespace and subject.kind == "ServiceAccount" and name not in policy_users:
                    continue
                findings.append(
                    Finding(
                        CHECK,
                        severity,
                        f"kubernetes {name} holds {role} {scope}",
                        f"{subject.kind} {name} is bound to {role} {scope} ({where}), which the policy does not grant",
                        evidence,
                    )
                )
            elif name not in entry.users:
                findings.append(
                    Finding(
                        CHECK,
                        severity,
                        f"kubernetes {role} bound to {subject.kind} {name} {scope}",
                        f"{subject.kind} {name} holds {role} {scope} ({where}); the policy gives {role} only to "
                        f"{', '.join(entry.users)}",
                        evidence,
                    )
                )
            elif entry.namespaces is not None and namespace not in entry.namespaces:
                findings.append(
                    Finding(
                        CHECK,
                        severity,
                        f"kubernetes {role} for {name} {scope}",
                        f"{name} holds {role} {scope} ({where}); the policy limits it to namespaces "
                        f"{', '.join(entry.namespaces)}",
                        evidence,
                    )
                )
            else:
                granted.add((entry.role, name, namespace))
    for entry in entries.values():
        for user in entry.users:
            for namespace in entry.namespaces or [None]:
                if (entry.role, user, namespace) not in granted:
                    scope = f"in namespace {namespace}" if namespace else "cluster-wide"
                    findings.append(
                        Finding(
                            CHECK,
                            "info",
                            f"kubernetes {entry.role} for {user} {scope} not bound",
                            f"the policy gives {user} {entry.role} {scope}, but no binding grants it",
                            {"role": entry.role, "subject": user, "namespace": namespace},
                        )
                    )
    return findings


def access_right_audit(policy: Policy, as_of: datetime) -> list[Finding]:
    from kubernetes import client

    with connection(policy.security.postgres_conn_id, autocommit=True) as conn:
        findings = audit_postgres(conn, policy)
    cluster_bindings, namespaced_bindings = read_kubernetes(
        policy.kubernetes.conn_id,
        "the RBAC bindings",
        lambda api: (
            client.RbacAuthorizationV1Api(api).list_cluster_role_binding().items,
            client.RbacAuthorizationV1Api(api).list_role_binding_for_all_namespaces().items,
        ),
    )
    return findings + audit_kubernetes(cluster_bindings, namespaced_bindings, policy)
