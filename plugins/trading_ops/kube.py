"""Kubernetes through an Airflow connection: one way to build the client, one way to report its failures, and the
`trading-api` workload the restore scales.

`call(conn_id, action, request)` runs `request(api_client)` with the client the provider's KubernetesHook builds
from the connection (a kubeconfig path, or in-cluster credentials); an API error or an unreachable API server
becomes `KubernetesUnavailable` with one sentence naming what could not be done. The restore scales and watches the
workload with it; the security checks read RBAC bindings and NetworkPolicies with it (`security.sources`).

The hook has no scale helper, so scaling goes through the apps/v1 client: `PATCH .../deployments/NAME/scale`.
Capacity review reads the Deployment, its HorizontalPodAutoscaler (autoscaling/v2) and its pods as the API's JSON
(`read_deployment`, `read_hpa`, `pod_manifests`; None for an object that does not exist) and patches them
(`patch_deployment`: strategic merge, so containers merge by name; `patch_hpa`: JSON merge patch, so the metrics
list is replaced whole; `create_hpa`). Each patch names its type rather than rely on the client's guess from the
body's Python type.
`autoscaler(workload)` finds the HorizontalPodAutoscaler managing the deployment (read only: its bounds are never
changed; with the deployment at 0 replicas Kubernetes pauses it, and scaling back resumes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class KubernetesUnavailable(RuntimeError):
    """The Kubernetes API could not be reached or refused a request; the message is one sentence."""


def api_client(conn_id: str):
    """The `kubernetes` ApiClient of Airflow connection `conn_id`."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id).api_client


def call(conn_id: str, action: str, request: Callable[..., T]) -> T:
    """`request(api_client)` on the cluster of `conn_id`; `action` ("read the RBAC bindings") names it in errors."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return request(api_client(conn_id))
    except ApiException as exc:
        raise KubernetesUnavailable(
            f"Cannot {action}: the Kubernetes API of {conn_id} answered {exc.status} {exc.reason}."
        ) from None
    except urllib3.exceptions.HTTPError as exc:
        raise KubernetesUnavailable(
            f"Cannot {action}: the Kubernetes API of {conn_id} is unreachable ({exc})."
        ) from None


# --- the trading-api workload -------------------------------------------------------------------------------------


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

    def __str__(self) -> str:
        return f"deployment {self.namespace}/{self.deployment}"


@dataclass(frozen=True)
class PodStatus:
    name: str
    ready: str
    status: str
    restarts: int
    age: str


def _apps(api):
    from kubernetes import client

    return client.AppsV1Api(api)


def current_replicas(workload: Workload) -> int:
    scale = call(
        workload.conn_id,
        f"read the scale of {workload}",
        lambda api: _apps(api).read_namespaced_deployment_scale(workload.deployment, workload.namespace),
    )
    return scale.spec.replicas or 0


def scale(workload: Workload, replicas: int) -> None:
    log.info("Scaling %s to %d replicas", workload, replicas)
    call(
        workload.conn_id,
        f"scale {workload} to {replicas}",
        lambda api: _apps(api).patch_namespaced_deployment_scale(
            workload.deployment, workload.namespace, {"spec": {"replicas": replicas}}
        ),
    )


@dataclass(frozen=True)
class Autoscaler:
    """A HorizontalPodAutoscaler whose scale target is the workload's deployment."""

    name: str
    min_replicas: int
    max_replicas: int

    def __str__(self) -> str:
        return f"HorizontalPodAutoscaler {self.name} (min {self.min_replicas}, max {self.max_replicas} replicas)"


def autoscaler(workload: Workload) -> Autoscaler | None:
    """The HPA (autoscaling/v2) that scales the workload's deployment, if one does; it is only read, never changed."""
    hpas = call(
        workload.conn_id,
        f"list the HorizontalPodAutoscalers in namespace {workload.namespace}",
        lambda api: _autoscaling(api).list_namespaced_horizontal_pod_autoscaler(workload.namespace),
    )
    for hpa in hpas.items:
        target = hpa.spec.scale_target_ref
        if target.kind == "Deployment" and target.name == workload.deployment:
            # minReplicas defaults to 1 when the HPA omits it.
            return Autoscaler(hpa.metadata.name, hpa.spec.min_replicas or 1, hpa.spec.max_replicas)
    return None


def ready_replicas(workload: Workload) -> int:
    deployment = call(
        workload.conn_id,
        f"read the status of {workload}",
        lambda api: _apps(api).read_namespaced_deployment_status(workload.deployment, workload.namespace),
    )
    return deployment.status.ready_replicas or 0


def pods(workload: Workload) -> list[PodStatus]:
    """What `kubectl get pods -l <selector>` shows."""
    from kubernetes import client

    pod_list = call(
        workload.conn_id,
        f"list the pods {workload.label_selector} in namespace {workload.namespace}",
        lambda api: client.CoreV1Api(api).list_namespaced_pod(
            workload.namespace, label_selector=workload.label_selector
        ),
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


# --- capacity: the Deployment, its HPA and pods as the API's JSON ------------------------------------------------

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def _autoscaling(api):
    from kubernetes import client

    return client.AutoscalingV2Api(api)


def _as_json(read: Callable) -> Callable:
    """`read(api)` as the API's JSON (camelCase keys), None when the object does not exist."""
    from kubernetes.client.exceptions import ApiException

    def request(api):
        try:
            return api.sanitize_for_serialization(read(api))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return request


def read_deployment(workload: Workload) -> dict | None:
    return call(
        workload.conn_id,
        f"read {workload}",
        _as_json(lambda api: _apps(api).read_namespaced_deployment(workload.deployment, workload.namespace)),
    )


def read_hpa(workload: Workload, name: str) -> dict | None:
    return call(
        workload.conn_id,
        f"read the HorizontalPodAutoscaler {workload.namespace}/{name}",
        _as_json(lambda api: _autoscaling(api).read_namespaced_horizontal_pod_autoscaler(name, workload.namespace)),
    )


def pod_manifests(workload: Workload) -> list[dict]:
    """The workload's pods (label selector) as the API's JSON, with their container statuses."""
    from kubernetes import client

    pod_list = call(
        workload.conn_id,
        f"list the pods {workload.label_selector} in namespace {workload.namespace}",
        lambda api: api.sanitize_for_serialization(
            client.CoreV1Api(api).list_namespaced_pod(workload.namespace, label_selector=workload.label_selector)
        ),
    )
    return pod_list.get("items") or []


def patch_deployment(workload: Workload, patch: dict) -> None:
    log.info("Patching %s (strategic merge): %s", workload, patch)
    call(
        workload.conn_id,
        f"patch {workload}",
        lambda api: _apps(api).patch_namespaced_deployment(
            workload.deployment, workload.namespace, patch, _content_type=STRATEGIC_MERGE_PATCH
        ),
    )


def patch_hpa(workload: Workload, name: str, patch: dict) -> None:
    log.info("Patching the HorizontalPodAutoscaler %s/%s (merge patch): %s", workload.namespace, name, patch)
    call(
        workload.conn_id,
        f"patch the HorizontalPodAutoscaler {workload.namespace}/{name}",
        lambda api: _autoscaling(api).patch_namespaced_horizontal_pod_autoscaler(
            name, workload.namespace, patch, _content_type=MERGE_PATCH
        ),
    )


def create_hpa(workload: Workload, manifest: dict) -> None:
    name = manifest["metadata"]["name"]
    log.info("Creating the HorizontalPodAutoscaler %s/%s: %s", workload.namespace, name, manifest)
    call(
        workload.conn_id,
        f"create the HorizontalPodAutoscaler {workload.namespace}/{name}",
        lambda api: _autoscaling(api).create_namespaced_horizontal_pod_autoscaler(workload.namespace, manifest),
    )
