"""The `trading-api` workload in Kubernetes, through the `kubernetes_default` Airflow connection.

The provider's KubernetesHook builds the client from the connection (kubeconfig path or in-cluster); it has no
scale helper, so scaling goes through its apps/v1 client: `PATCH .../deployments/NAME/scale`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    conn_id: str
    namespace: str
    deployment: str
    label_selector: str

    @classmethod
    def from_policy(cls, policy) -> Workload:
        k8s = policy.kubernetes
        return cls(k8s.conn_id, k8s.namespace, k8s.deployment, k8s.label_selector)


@dataclass(frozen=True)
class PodStatus:
    name: str
    ready: str
    status: str
    restarts: int
    age: str


def _hook(conn_id: str):
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id)


def current_replicas(workload: Workload) -> int:
    scale = _hook(workload.conn_id).apps_v1_client.read_namespaced_deployment_scale(
        workload.deployment, workload.namespace
    )
    return scale.spec.replicas or 0


def scale(workload: Workload, replicas: int) -> None:
    log.info("Scaling deployment %s/%s to %d replicas", workload.namespace, workload.deployment, replicas)
    _hook(workload.conn_id).apps_v1_client.patch_namespaced_deployment_scale(
        workload.deployment, workload.namespace, {"spec": {"replicas": replicas}}
    )


def ready_replicas(workload: Workload) -> int:
    deployment = _hook(workload.conn_id).apps_v1_client.read_namespaced_deployment_status(
        workload.deployment, workload.namespace
    )
    return deployment.status.ready_replicas or 0


def pods(workload: Workload) -> list[PodStatus]:
    """What `kubectl get pods -l <selector>` shows."""
    pod_list = _hook(workload.conn_id).core_v1_client.list_namespaced_pod(
        workload.namespace, label_selector=workload.label_selector
    )
    now = datetime.now(UTC)
    result = []
    for pod in pod_list.items:
        statuses = pod.status.container_statuses or []
        ready = sum(1 for status in statuses if status.ready)
        phase = "Terminating" if pod.metadata.deletion_timestamp else pod.status.phase
        created = pod.metadata.creation_timestamp
        result.append(
            PodStatus(
                name=pod.metadata.name,
                ready=f"{ready}/{len(pod.spec.containers)}",
                status=phase,
                restarts=sum(status.restart_count or 0 for status in statuses),
                age=_age(now - created) if created else "?",
            )
        )
    return result


def format_pods(pod_statuses: list[PodStatus]) -> str:
    header = ("NAME", "READY", "STATUS", "RESTARTS", "AGE")
    rows = [header] + [(p.name, p.ready, p.status, str(p.restarts), p.age) for p in pod_statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def wait_until(description: str, condition, timeout: timedelta, poll: float = 2.0):
    """Poll `condition()` until it returns a truthy value; TimeoutError naming `description` otherwise."""
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Timed out after {timeout} waiting until {description}.")
        time.sleep(poll)


def wait_for_no_pods(workload: Workload, timeout: timedelta, poll: float = 2.0) -> None:
    def none_left() -> bool:
        remaining = pods(workload)
        if remaining:
            log.info("%d pod(s) still present:\n%s", len(remaining), format_pods(remaining))
        return not remaining

    wait_until(f"no pod with label {workload.label_selector} remains", none_left, timeout, poll)


def wait_for_ready(workload: Workload, desired: int, timeout: timedelta, poll: float = 2.0) -> list[PodStatus]:
    def all_ready() -> bool:
        ready = ready_replicas(workload)
        log.info("%s: %d/%d replicas ready", workload.deployment, ready, desired)
        return ready == desired

    wait_until(f"{desired} replicas of {workload.deployment} are ready", all_ready, timeout, poll)
    final = pods(workload)
    log.info("kubectl get pods -l %s\n%s", workload.label_selector, format_pods(final))
    return final
