"""The live trading-api Deployment, its HorizontalPodAutoscaler and its pods, held against the policy.

`read_workload` reads them through the `kubernetes` connection (`trading_ops.kube`). `workload_findings` turns what
it read into findings of the check `capacity_workload`:

- drift: the HPA missing (critical: nothing scales), its scale target, minReplicas, maxReplicas and cpu/memory
  utilization targets (a metric the policy does not name too), the Deployment or its container missing
  (critical), and each of the container's requests and limits (quantities compared as numbers: 1000m is 1);
  warnings otherwise;
- room: the HPA at maxReplicas for longer than `capacity.at_max_replicas_for` (warning). The HPA status says when
  the replica count last changed (`lastScaleTime`): at the maximum since then. Without it, the `ScalingLimited`
  condition with reason `TooManyReplicas` (the HPA wants more than its maximum) says since when; with neither the
  duration is unknown and reported as such;
- pods OOM-killed (a container's `state` or `lastState.terminated.reason` OOMKilled, finished inside
  `capacity.pod_events_window`) or evicted (`status.reason` Evicted: the node ran out of memory or disk): warnings.
  CPU throttling is not in a pod's status at all: the kubelet exposes it only as cAdvisor's
  `container_cpu_cfs_throttled_periods_total` metric (a Prometheus query), which this review does not read.

`planned_changes` is what `apply` sends to bring the objects back to the policy: the resources patch and the HPA
spec of `manifests` (create the HPA if it is missing). A container missing from the Deployment is not added: a
patch cannot invent its image.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from trading_ops import kube
from trading_ops.alerting import format_duration
from trading_ops.capacity.manifests import container_resources, desired_hpa, hpa_spec, resources_patch
from trading_ops.policy import WORKLOAD_CHECK, Policy, parse_quantity
from trading_ops.security.findings import Finding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkloadState:
    deployment: dict | None
    hpa: dict | None
    pods: list[dict]


@dataclass(frozen=True)
class Change:
    """One request of `apply`: what it does, in words, and the body it sends."""

    action: str
    description: str
    body: dict

    def as_dict(self) -> dict:
        return {"action": self.action, "description": self.description, "body": self.body}


def read_workload(policy: Policy) -> WorkloadState:
    workload = kube.Workload.from_policy(policy)
    return WorkloadState(
        deployment=kube.read_deployment(workload),
        hpa=kube.read_hpa(workload, policy.capacity.hpa),
        pods=kube.pod_manifests(workload),
    )


def _finding(severity: str, subject: str, message: str, **evidence) -> Finding:
    return Finding(WORKLOAD_CHECK, severity, subject, message, evidence)


def _names(policy: Policy) -> tuple[str, str]:
    k8s = policy.kubernetes
    return f"deployment {k8s.namespace}/{k8s.deployment}", f"hpa {k8s.namespace}/{policy.capacity.hpa}"


def _container(policy: Policy, deployment: dict) -> dict | None:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return next((c for c in containers if c.get("name") == policy.capacity.container), None)


def resource_findings(policy: Policy, deployment: dict | None) -> list[Finding]:
    deployment_name, _ = _names(policy)
    if deployment is None:
        return [_finding("critical", deployment_name, "does not exist: the review has no pods to hold to the policy")]
    container = _container(policy, deployment)
    if container is None:
        return [
            _finding(
                "critical",
                f"{deployment_name} container {policy.capacity.container}",
                "does not exist (capacity.container names the container whose resources the policy sets)",
            )
        ]
    live = container.get("resources") or {}
    findings = []
    for kind, amounts in container_resources(policy).items():
        for resource, wanted in amounts.items():
            actual = (live.get(kind) or {}).get(resource)
            if actual is not None and parse_quantity(actual) == parse_quantity(wanted):
                continue
            findings.append(
                _finding(
                    "warning",
                    f"{deployment_name} container {policy.capacity.container} {kind}.{resource}",
                    f"{kind}.{resource} is {actual if actual is not None else 'not set'}; the policy says {wanted}",
                    live=actual,
                    policy=wanted,
                )
            )
    return findings


def _metric_targets(spec: dict) -> tuple[dict[str, int | None], list[dict]]:
    """Utilization targets of the HPA's Resource metrics by resource name, and every other metric."""
    targets, others = {}, []
    for metric in spec.get("metrics") or []:
        resource = metric.get("resource") or {}
        target = resource.get("target") or {}
        if metric.get("type") == "Resource" and target.get("type") == "Utilization":
            targets[resource.get("name")] = target.get("averageUtilization")
        else:
            others.append(metric)
    return targets, others


def hpa_findings(policy: Policy, hpa: dict | None) -> list[Finding]:
    _, hpa_name = _names(policy)
    if hpa is None:
        return [
            _finding(
                "critical",
                hpa_name,
                f"does not exist: {policy.kubernetes.deployment} does not autoscale "
                f"(the policy: {policy.resources.autoscaling.min_replicas}-{policy.resources.autoscaling.max_replicas}"
                " replicas)",
            )
        ]
    live, wanted = hpa.get("spec") or {}, hpa_spec(policy)
    findings = []
    for field in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if live.get(field) != wanted[field]:
            findings.append(
                _finding(
                    "warning",
                    f"{hpa_name} {field}",
                    f"{field} is {json.dumps(live.get(field))}; the policy says {json.dumps(wanted[field])}",
                    live=live.get(field),
                    policy=wanted[field],
                )
            )
    live_targets, others = _metric_targets(live)
    wanted_targets, _ = _metric_targets(wanted)
    for resource, target in wanted_targets.items():
        if live_targets.get(resource) != target:
            actual = live_targets.get(resource)
            findings.append(
                _finding(
                    "warning",
                    f"{hpa_name} {resource} target",
                    f"{resource} utilization target is {f'{actual}%' if actual is not None else 'not set'}; "
                    f"the policy says {target}%",
                    live=actual,
                    policy=target,
                )
            )
    for resource in sorted(set(live_targets) - set(wanted_targets), key=str):
        findings.append(
            _finding(
                "warning", f"{hpa_name} {resource} target", f"{resource} is a scaling metric the policy does not set"
            )
        )
    if others:
        findings.append(
            _finding(
                "warning",
                f"{hpa_name} other metrics",
                f"scales on {len(others)} metric(s) the policy does not set",
                live=others,
            )
        )
    return findings


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def at_max_replicas(policy: Policy, hpa: dict | None, as_of: datetime) -> list[Finding]:
    if hpa is None:
        return []
    _, hpa_name = _names(policy)
    status = hpa.get("status") or {}
    maximum = (hpa.get("spec") or {}).get("maxReplicas")
    current = status.get("currentReplicas")
    if maximum is None or current is None or current < maximum:
        return []
    limited = next(
        (
            condition
            for condition in status.get("conditions") or []
            if condition.get("type") == "ScalingLimited"
            and condition.get("status") == "True"
            and condition.get("reason") == "TooManyReplicas"
        ),
        None,
    )
    wants_more = " and wants more (ScalingLimited: TooManyReplicas)" if limited else ""
    since = _time(status.get("lastScaleTime")) or _time((limited or {}).get("lastTransitionTime"))
    limit = policy.capacity.at_max_replicas_for
    subject = f"{hpa_name} at maxReplicas"
    if since is None:
        return [
            _finding(
                "warning",
                subject,
                f"runs {current} of at most {maximum} replicas{wants_more}; its status does not say since when, so "
                f"it may have been longer than {format_duration(limit)}: the platform may be out of room",
                current=current,
                max=maximum,
            )
        ]
    pinned = as_of - since
    if pinned <= limit:
        return []
    return [
        _finding(
            "warning",
            subject,
            f"has run {current} of at most {maximum} replicas since {since.isoformat()} "
            f"({format_duration(pinned)}, over {format_duration(limit)}){wants_more}: the platform has run out of room",
            current=current,
            max=maximum,
            since=since.isoformat(),
        )
    ]


def pod_findings(policy: Policy, pods: list[dict], as_of: datetime) -> list[Finding]:
    deployment_name, _ = _names(policy)
    window = policy.capacity.pod_events_window
    oom_killed, evicted = [], []
    for pod in pods:
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            evicted.append({"pod": name, "message": status.get("message", "")})
        for container in status.get("containerStatuses") or []:
            for state in ("state", "lastState"):
                terminated = (container.get(state) or {}).get("terminated") or {}
                finished = _time(terminated.get("finishedAt"))
                if terminated.get("reason") == "OOMKilled" and finished and as_of - window <= finished <= as_of:
                    oom_killed.append(
                        {
                            "pod": name,
                            "container": container.get("name"),
                            "finished_at": finished.isoformat(),
                            "restarts": container.get("restartCount", 0),
                        }
                    )
    findings = []
    if oom_killed:
        limit = policy.resources.pod_resources.limits.memory
        findings.append(
            _finding(
                "warning",
                f"{deployment_name} pods OOM-killed",
                f"{len(oom_killed)} container(s) were OOM-killed in the {format_duration(window)} before the run "
                f"(the policy's memory limit is {limit}): "
                + ", ".join(f"{item['pod']}/{item['container']} at {item['finished_at']}" for item in oom_killed[:5]),
                containers=oom_killed,
            )
        )
    if evicted:
        findings.append(
            _finding(
                "warning",
                f"{deployment_name} pods evicted",
                f"{len(evicted)} pod(s) were evicted (their node ran out of memory or disk): "
                + ", ".join(item["pod"] for item in evicted[:5]),
                pods=evicted,
            )
        )
    return findings


def workload_findings(policy: Policy, state: WorkloadState, as_of: datetime) -> list[Finding]:
    return [
        *resource_findings(policy, state.deployment),
        *hpa_findings(policy, state.hpa),
        *at_max_replicas(policy, state.hpa, as_of),
        *pod_findings(policy, state.pods, as_of),
    ]


def planned_changes(policy: Policy, state: WorkloadState) -> list[Change]:
    deployment_name, hpa_name = _names(policy)
    changes = []
    # A missing container is reported, never added: a patch cannot invent its image.
    container_present = state.deployment is not None and _container(policy, state.deployment) is not None
    if container_present and resource_findings(policy, state.deployment):
        changes.append(
            Change(
                "patch_deployment",
                f"PATCH {deployment_name} (strategic merge; the Deployment rolls its pods)",
                resources_patch(policy),
            )
        )
    if state.hpa is None:
        changes.append(Change("create_hpa", f"POST {hpa_name}", desired_hpa(policy)))
    elif hpa_findings(policy, state.hpa):
        changes.append(Change("patch_hpa", f"PATCH {hpa_name} (merge patch)", {"spec": hpa_spec(policy)}))
    return changes


def apply_changes(policy: Policy, changes: list[Change]) -> None:
    workload = kube.Workload.from_policy(policy)
    for change in changes:
        log.info("Applying: %s\n%s", change.description, json.dumps(change.body, indent=2))
        if change.action == "patch_deployment":
            kube.patch_deployment(workload, change.body)
        elif change.action == "create_hpa":
            kube.create_hpa(workload, change.body)
        else:
            kube.patch_hpa(workload, policy.capacity.hpa, change.body)
