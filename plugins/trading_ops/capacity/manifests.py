"""The Kubernetes objects the policy asks for: the trading-api HorizontalPodAutoscaler and its container resources.

`desired_hpa` (a whole autoscaling/v2 object) and `resources_patch` (a strategic-merge patch of the Deployment that
sets only the container's resources) are what `python -m trading_ops k8s render` writes under include/k8s/ and what
capacity_review's `apply` sends, so the committed manifests and the live fix can never differ.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from trading_ops.paths import INCLUDE_DIR
from trading_ops.policy import Policy

K8S_DIR = INCLUDE_DIR / "k8s"
HPA_FILE = "trading-api-hpa.yaml"
RESOURCES_FILE = "trading-api-resources-patch.yaml"
MANAGED_BY = {"app.kubernetes.io/managed-by": "trading-ops"}


def desired_hpa(policy: Policy) -> dict:
    k8s = policy.kubernetes
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": policy.capacity.hpa, "namespace": k8s.namespace, "labels": dict(MANAGED_BY)},
        "spec": hpa_spec(policy),
    }


def hpa_spec(policy: Policy) -> dict:
    autoscaling = policy.resources.autoscaling
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": policy.kubernetes.deployment},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": [
            _utilization("cpu", autoscaling.cpu_target),
            _utilization("memory", autoscaling.memory_target),
        ],
    }


def _utilization(resource: str, percent: float) -> dict:
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": int(percent)}},
    }


def container_resources(policy: Policy) -> dict:
    pod = policy.resources.pod_resources
    return {
        "requests": {"cpu": pod.requests.cpu, "memory": pod.requests.memory},
        "limits": {"cpu": pod.limits.cpu, "memory": pod.limits.memory},
    }


def resources_patch(policy: Policy) -> dict:
    """Containers merge by name in a strategic-merge patch: this touches the one container's resources only."""
    container = {"name": policy.capacity.container, "resources": container_resources(policy)}
    return {"spec": {"template": {"spec": {"containers": [container]}}}}


def rendered(policy: Policy) -> dict[str, str]:
    """File name -> text of include/k8s/."""
    k8s = policy.kubernetes
    header = "# Rendered from include/config/ops_policy.yaml by `python -m trading_ops k8s render`; do not edit.\n"
    patch_usage = (
        f"# Apply: kubectl -n {k8s.namespace} patch deployment {k8s.deployment} --type strategic "
        f"--patch-file include/k8s/{RESOURCES_FILE}\n"
    )
    return {
        HPA_FILE: header + _yaml(desired_hpa(policy)),
        RESOURCES_FILE: header + patch_usage + _yaml(resources_patch(policy)),
    }


def _yaml(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def render(policy: Policy, directory: Path = K8S_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered(policy).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def stale(policy: Policy, directory: Path = K8S_DIR) -> list[str]:
    """The files of `directory` that differ from what the policy renders (or are missing)."""
    return [
        name
        for name, text in rendered(policy).items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
