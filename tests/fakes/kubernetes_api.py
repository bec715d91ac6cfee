"""A Kubernetes API server on 127.0.0.1 that serves stored objects at the paths the `kubernetes` client uses.

Collections are registered with `add_collection(prefix, resource, kind)`; each gets the list path of all
namespaces (`GET /apis/rbac.authorization.k8s.io/v1/rolebindings`), the namespaced list and get paths
(`GET .../namespaces/NS/rolebindings[/NAME]`), `labelSelector=key=value[,key=value]` filtering, and Kubernetes'
`Status` body for a 404. Built in: RBAC ClusterRoleBindings and RoleBindings, NetworkPolicies, pods, and the
writable apps/v1 Deployments and autoscaling/v2 HorizontalPodAutoscalers: `PATCH .../NAME` applies a strategic-merge
patch (lists of objects with a `name` merge by name, as containers do) or a JSON merge patch (lists replaced) to the
stored object by its Content-Type, refusing a JSON Patch whose body is not a list as the API server does, and
`POST .../namespaces/NS/<resource>` creates one (409 if it exists).

To simulate more of the API (apps/v1 deployments with `PATCH .../deployments/NAME/scale` and
`GET .../deployments/NAME/status` for a restore), add a collection and routes:

    fake.add_collection("/apis/apps/v1", "deployments", "Deployment")
    @fake.route("PATCH", r"/apis/apps/v1/namespaces/(?P<namespace>[^/]+)/deployments/(?P<name>[^/]+)/scale")
    def scale(request): ...  # request.params["namespace"], request.json() -> (status, body)

The `kubernetes_default` Airflow connection reaches it through a kubeconfig whose server is the fake's URL
(`write_kubeconfig`, `connection_json`); every request is recorded in `requests`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from tests.fakes.http_server import RecordingHttpServer

RBAC = "/apis/rbac.authorization.k8s.io/v1"
NETWORKING = "/apis/networking.k8s.io/v1"
CORE = "/api/v1"
APPS = "/apis/apps/v1"
AUTOSCALING = "/apis/autoscaling/v2"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class KubernetesApiFake(RecordingHttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, list[dict]] = {}
        self._resource_version = 1000
        self.add_collection(RBAC, "clusterrolebindings", "ClusterRoleBinding", namespaced=False)
        self.add_collection(RBAC, "rolebindings", "RoleBinding")
        self.add_collection(NETWORKING, "networkpolicies", "NetworkPolicy")
        self.add_collection(CORE, "pods", "Pod")
        self.add_collection(APPS, "deployments", "Deployment", writable=True)
        self.add_collection(AUTOSCALING, "horizontalpodautoscalers", "HorizontalPodAutoscaler", writable=True)

    # --- collections -------------------------------------------------------------------------------------------

    def add_collection(
        self, prefix: str, resource: str, kind: str, *, namespaced: bool = True, writable: bool = False
    ) -> None:
        self.objects.setdefault(resource, [])
        api_version = prefix.removeprefix("/apis/").removeprefix("/api/")

        def list_objects(request):
            namespace = request.params.get("namespace")
            items = [
                item
                for item in self.objects[resource]
                if (namespace is None or item["metadata"].get("namespace") == namespace)
                and _selected(item, request.query.get("labelSelector", [""])[0])
            ]
            return 200, {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self._resource_version)},
                "items": [{"kind": kind, "apiVersion": api_version, **item} for item in items],
            }

        def find(request) -> dict | None:
            for item in self.objects[resource]:
                metadata = item["metadata"]
                if metadata["name"] == request.params["name"] and metadata.get("namespace") == request.params.get(
                    "namespace"
                ):
                    return item
            return None

        def get_object(request):
            item = find(request)
            return (200, {"kind": kind, "apiVersion": api_version, **item}) if item else self.not_found(request)

        def patch_object(request):
            item = find(request)
            if item is None:
                return self.not_found(request)
            content_type = request.headers.get("Content-Type", "")
            body = request.json()
            if content_type in (STRATEGIC_MERGE_PATCH, MERGE_PATCH):
                merged = _merge(item, body, by_name=content_type == STRATEGIC_MERGE_PATCH)
            else:
                return self.status(400, "BadRequest", f"the fake applies no {content_type} patch to an object body")
            self._resource_version += 1
            merged["metadata"]["resourceVersion"] = str(self._resource_version)
            merged["metadata"]["generation"] = merged["metadata"].get("generation", 1) + 1
            self.objects[resource][self.objects[resource].index(item)] = merged
            return 200, {"kind": kind, "apiVersion": api_version, **merged}

        def create_object(request):
            body = request.json()
            for envelope in ("kind", "apiVersion"):
                body.pop(envelope, None)
            body["metadata"]["namespace"] = request.params["namespace"]
            request.params["name"] = body["metadata"]["name"]
            if find(request) is not None:
                return self.status(409, "AlreadyExists", f"{resource} {body['metadata']['name']} already exists")
            return 201, {"kind": kind, "apiVersion": api_version, **self.add(resource, body)}

        self.route("GET", rf"{prefix}/{resource}")(list_objects)
        if namespaced:
            self.route("GET", rf"{prefix}/namespaces/(?P<namespace>[^/]+)/{resource}")(list_objects)
            self.route("GET", rf"{prefix}/namespaces/(?P<namespace>[^/]+)/{resource}/(?P<name>[^/]+)")(get_object)
            if writable:
                self.route("PATCH", rf"{prefix}/namespaces/(?P<namespace>[^/]+)/{resource}/(?P<name>[^/]+)")(
                    patch_object
                )
                self.route("POST", rf"{prefix}/namespaces/(?P<namespace>[^/]+)/{resource}")(create_object)
        else:
            self.route("GET", rf"{prefix}/{resource}/(?P<name>[^/]+)")(get_object)

    def add(self, resource: str, obj: dict) -> dict:
        self._resource_version += 1
        obj["metadata"].setdefault("uid", f"uid-{self._resource_version}")
        obj["metadata"].setdefault("resourceVersion", str(self._resource_version))
        obj["metadata"].setdefault("creationTimestamp", "2026-01-05T09:00:00Z")
        self.objects[resource].append(obj)
        return obj

    def not_found(self, request):
        return self.status(404, "NotFound", f"the server could not find the requested resource ({request.path})")

    def status(self, code: int, reason: str, message: str):
        """Kubernetes' `Status` body of a refused request."""
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
        return code, {**body, "reason": reason, "code": code}

    def patches(self) -> list:
        """The PATCH requests received, in order."""
        return [request for request in self.requests if request.method == "PATCH"]

    # --- typed helpers -----------------------------------------------------------------------------------------

    def add_cluster_role_binding(self, name: str, role: str, subjects: list[dict]) -> dict:
        return self.add(
            "clusterrolebindings",
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": subjects,
            },
        )

    def add_role_binding(self, namespace: str, name: str, role: str, subjects: list[dict], role_kind="ClusterRole"):
        return self.add(
            "rolebindings",
            {
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                "subjects": subjects,
            },
        )

    def add_network_policy(self, namespace: str, name: str, pod_labels: dict, ingress: list[dict] | None) -> dict:
        spec = {"podSelector": {"matchLabels": pod_labels}, "policyTypes": ["Ingress"]}
        if ingress is not None:
            spec["ingress"] = ingress
        return self.add("networkpolicies", {"metadata": {"name": name, "namespace": namespace}, "spec": spec})

    def add_autoscaler(self, namespace: str, name: str, deployment: str, min_replicas: int, max_replicas: int):
        return self.add(
            "horizontalpodautoscalers",
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                    "minReplicas": min_replicas,
                    "maxReplicas": max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                        }
                    ],
                },
            },
        )

    # --- client configuration ----------------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    def connection_json(self, kubeconfig: Path, namespace: str = "default") -> str:
        """The AIRFLOW_CONN_KUBERNETES_DEFAULT value pointing the provider's KubernetesHook at this fake."""
        return json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig), "namespace": namespace}}
        )


def user(name: str) -> dict:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def group(name: str) -> dict:
    return {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def service_account(namespace: str, name: str) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def _merge(target: object, patch: object, *, by_name: bool) -> object:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes a key, anything else replaces. With
    `by_name`, Kubernetes' strategic merge for the fields these tests patch: lists of objects with a `name`
    (containers, ports, env) merge element by element by name."""
    if isinstance(patch, dict):
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = _merge(result.get(key), value, by_name=by_name)
        return result
    named = isinstance(patch, list) and all(isinstance(e, dict) and "name" in e for e in patch)
    if by_name and named and isinstance(target, list):
        merged = copy.deepcopy(target)
        for element in patch:
            index = next((i for i, old in enumerate(merged) if old.get("name") == element["name"]), None)
            if index is None:
                merged.append(copy.deepcopy(element))
            else:
                merged[index] = _merge(merged[index], element, by_name=True)
        return merged
    return copy.deepcopy(patch)


def _selected(item: dict, selector: str) -> bool:
    labels = item["metadata"].get("labels", {})
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True
