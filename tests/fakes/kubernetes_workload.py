"""A Kubernetes API server on 127.0.0.1 that simulates one Deployment and its pods.

It speaks the paths the `kubernetes` client uses for scaling and status:
`GET|PATCH /apis/apps/v1/namespaces/NS/deployments/NAME/scale`, `GET .../deployments/NAME/status`,
`GET /api/v1/namespaces/NS/pods?labelSelector=...`. Scaling down marks pods Terminating and removes them after
`terminate_seconds`; scaling up creates pods that become ready after `start_seconds`, as a real rollout does.
Every request is recorded (RecordingServer), and so is the moment the last pod disappeared.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.fakes.recording_server import RecordedRequest, RecordingServer


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


class FakeKubernetes:
    def __init__(self, deployment: FakeDeployment):
        self.deployment = deployment
        self.lock = threading.Lock()
        self.server = RecordingServer(self._handle)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def __enter__(self) -> FakeKubernetes:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "ops", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ops"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    def connection_json(self, kubeconfig: Path) -> str:
        extra = {"kube_config_path": str(kubeconfig), "namespace": self.deployment.namespace}
        return json.dumps({"conn_type": "kubernetes", "extra": extra})

    def scale_requests(self) -> list[int]:
        return [request.json()["spec"]["replicas"] for request in self.requests if request.method == "PATCH"]

    def _handle(self, request: RecordedRequest) -> tuple[int, dict]:
        d = self.deployment
        base = f"/apis/apps/v1/namespaces/{d.namespace}/deployments/{d.name}"
        with self.lock:
            d.tick()
            if request.path == f"{base}/scale" and request.method == "PATCH":
                d.scale(int(request.json()["spec"]["replicas"]))
                return 200, self._scale_json()
            if request.path == f"{base}/scale" and request.method == "GET":
                return 200, self._scale_json()
            if request.path in (base, f"{base}/status") and request.method == "GET":
                return 200, self._deployment_json()
            if request.path == f"/api/v1/namespaces/{d.namespace}/pods" and request.method == "GET":
                return 200, self._pods_json(request.query.get("labelSelector", [""])[0])
        return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}

    # --- wire format ---------------------------------------------------------------------------------------

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
                "template": {
                    "metadata": {"labels": d.labels},
                    "spec": {"containers": [{"name": "api", "image": "trading-api:1.0"}]},
                },
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
        selector = ",".join(f"{k}={v}" for k, v in d.labels.items())
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": d.name, "namespace": d.namespace},
            "spec": {"replicas": d.replicas},
            "status": {"replicas": len(d.pods), "selector": selector},
        }

    def _pods_json(self, selector: str) -> dict:
        d = self.deployment
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        matches = all(d.labels.get(key) == value for key, value in wanted.items())
        now = time.time()
        items = []
        for pod in d.pods if matches else []:
            ready = pod.deleted_at is None and pod.ready_at <= now
            metadata = {
                "name": pod.name,
                "namespace": d.namespace,
                "labels": d.labels,
                "creationTimestamp": _iso(pod.created),
            }
            if pod.deleted_at is not None:
                metadata["deletionTimestamp"] = _iso(pod.deleted_at)
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": metadata,
                    "spec": {"containers": [{"name": "api", "image": "trading-api:1.0"}]},
                    "status": {
                        "phase": "Running" if pod.ready_at <= now else "Pending",
                        "containerStatuses": [
                            {
                                "name": "api",
                                "ready": ready,
                                "restartCount": 0,
                                "image": "trading-api:1.0",
                                "imageID": "",
                            }
                        ],
                    },
                }
            )
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
