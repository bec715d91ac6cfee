"""The Kubernetes API fake with a live Deployment: scaling changes its pods over time, as a real rollout does.

Adds to `KubernetesApiFake` the paths the restore uses: `GET|PATCH /apis/apps/v1/namespaces/NS/deployments/NAME/scale`
and `GET .../deployments/NAME[/status]`; the Deployment's pods are served by the fake's pod list (with label
selectors). Scaling down marks pods Terminating and removes them after `terminate_seconds`; scaling up creates
pods that become ready after `start_seconds`. The replica counts asked for and the moments when no pod was left
are recorded, so a test can show the restore waited for the pods to be gone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.fakes.http_server import Request
from tests.fakes.kubernetes_api import KubernetesApiFake

APPS = "/apis/apps/v1"
CONTAINERS = [{"name": "api", "image": "trading-api:1.0"}]


@dataclass
class FakePod:
    name: str
    created: float
    ready_at: float
    deleted_at: float | None = None


@dataclass
class FakeDeployment:
    namespace: str
    name: str
    labels: dict[str, str]
    replicas: int
    terminate_seconds: float = 0.5
    start_seconds: float = 0.5
    pods: list[FakePod] = field(default_factory=list)
    serial: int = 0
    replica_history: list[int] = field(default_factory=list)
    all_pods_gone_at: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.replica_history.append(self.replicas)
        now = time.time()
        for _ in range(self.replicas):
            self._add_pod(now, ready_at=now)

    def _add_pod(self, now: float, ready_at: float) -> None:
        self.serial += 1
        self.pods.append(FakePod(f"{self.name}-7d9f8c-{self.serial:05d}", now, ready_at))

    def scale(self, replicas: int) -> None:
        now = time.time()
        self.replicas = replicas
        self.replica_history.append(replicas)
        live = [pod for pod in self.pods if pod.deleted_at is None]
        for pod in live[replicas:]:
            pod.deleted_at = now
        for _ in range(replicas - len(live)):
            self._add_pod(now, ready_at=now + self.start_seconds)

    def tick(self) -> None:
        now = time.time()
        had_pods = bool(self.pods)
        self.pods = [p for p in self.pods if p.deleted_at is None or now < p.deleted_at + self.terminate_seconds]
        if had_pods and not self.pods:
            self.all_pods_gone_at.append(now)

    def ready_count(self) -> int:
        now = time.time()
        return sum(1 for p in self.pods if p.deleted_at is None and p.ready_at <= now)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TradingApiFake(KubernetesApiFake):
    """KubernetesApiFake serving one simulated Deployment (by default trading/trading-api, 3 ready pods)."""

    def __init__(self, deployment: FakeDeployment | None = None) -> None:
        super().__init__()
        self.deployment = deployment or FakeDeployment("trading", "trading-api", {"app": "trading-api"}, replicas=3)
        self.lock = threading.Lock()
        base = rf"{APPS}/namespaces/{self.deployment.namespace}/deployments/{self.deployment.name}"
        # The simulated Deployment's routes come before the stored Deployments' of KubernetesApiFake.
        stored_routes, self.routes = self.routes, []
        self.route("GET", f"{base}/scale")(lambda request: (200, self._scale_json()))
        self.route("PATCH", f"{base}/scale")(self._patch_scale)
        self.route("GET", base)(lambda request: (200, self._deployment_json()))
        self.route("GET", f"{base}/status")(lambda request: (200, self._deployment_json()))
        self.routes += stored_routes

    def dispatch(self, request: Request) -> tuple[int, object]:
        with self.lock:
            self.deployment.tick()
            self.objects["pods"] = [pod for pod in self.objects["pods"] if not self._owned(pod)]
            self.objects["pods"] += [self._pod_json(pod) for pod in self.deployment.pods]
            return super().dispatch(request)

    def scale_requests(self) -> list[int]:
        return [
            r.json()["spec"]["replicas"] for r in self.requests if r.method == "PATCH" and r.path.endswith("/scale")
        ]

    def _owned(self, pod: dict) -> bool:
        return any(owner["uid"] == self.deployment.name for owner in pod["metadata"].get("ownerReferences", []))

    def _patch_scale(self, request: Request) -> tuple[int, dict]:
        self.deployment.scale(int(request.json()["spec"]["replicas"]))
        return 200, self._scale_json()

    def _deployment_json(self) -> dict:
        d = self.deployment
        ready = d.ready_count()
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": d.name, "namespace": d.namespace, "labels": d.labels},
            "spec": {
                "replicas": d.replicas,
                "selector": {"matchLabels": d.labels},
                "template": {"metadata": {"labels": d.labels}, "spec": {"containers": CONTAINERS}},
            },
            "status": {
                "replicas": len([p for p in d.pods if p.deleted_at is None]),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "updatedReplicas": d.replicas,
            },
        }

    def _scale_json(self) -> dict:
        d = self.deployment
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": d.name, "namespace": d.namespace},
            "spec": {"replicas": d.replicas},
            "status": {"replicas": len(d.pods), "selector": ",".join(f"{k}={v}" for k, v in d.labels.items())},
        }

    def _pod_json(self, pod: FakePod) -> dict:
        d = self.deployment
        now = time.time()
        metadata = {
            "name": pod.name,
            "namespace": d.namespace,
            "labels": d.labels,
            "creationTimestamp": _iso(pod.created),
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{d.name}-7d9f8c", "uid": d.name}
            ],
        }
        if pod.deleted_at is not None:
            metadata["deletionTimestamp"] = _iso(pod.deleted_at)
        ready = pod.deleted_at is None and pod.ready_at <= now
        return {
            "metadata": metadata,
            "spec": {"containers": CONTAINERS},
            "status": {
                "phase": "Running" if pod.ready_at <= now else "Pending",
                "containerStatuses": [
                    {"name": "api", "ready": ready, "restartCount": 0, "image": CONTAINERS[0]["image"], "imageID": ""}
                ],
            },
        }
