"""A Kubernetes API server on 127.0.0.1 that serves stored objects at the paths the `kubernetes` client uses.

Collections are registered with `add_collection(prefix, resource, kind)`; each gets the list path of all
namespaces (`GET /apis/rbac.authorization.k8s.io/v1/rolebindings`), the namespaced list and get paths
(`GET .../namespaces/NS/rolebindings[/NAME]`), `labelSelector=key=value[,key=value]` filtering, and Kubernetes'
`Status` body for a 404. Built in: RBAC ClusterRoleBindings and RoleBindings, NetworkPolicies, and pods.

To simulate more of the API (apps/v1 deployments with `PATCH .../deployments/NAME/scale` and
`GET .../deployments/NAME/status` for a restore), add a collection and routes:

    fake.add_collection("/apis/apps/v1", "deployments", "Deployment")
    @fake.route("PATCH", r"/apis/apps/v1/namespaces/(?P<namespace>[^/]+)/deployments/(?P<name>[^/]+)/scale")
    def scale(request): ...  # request.params["namespace"], request.json() -> (status, body)

The `kubernetes_default` Airflow connection reaches it through a kubeconfig whose server is the fake's URL
(`write_kubeconfig`, `connection_json`); every request is recorded in `requests`.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.fakes.http_server import RecordingHttpServer

RBAC = "/apis/rbac.authorization.k8s.io/v1"
NETWORKING = "/apis/networking.k8s.io/v1"
CORE = "/api/v1"


class KubernetesApiFake(RecordingHttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, list[dict]] = {}
        self._resource_version = 1000
        self.add_collection(RBAC, "clusterrolebindings", "ClusterRoleBinding", namespaced=False)
        self.add_collection(RBAC, "rolebindings", "RoleBinding")
        self.add_collection(NETWORKING, "networkpolicies", "NetworkPolicy")
        self.add_collection(CORE, "pods", "Pod")

    # --- collections -------------------------------------------------------------------------------------------

    def add_collection(self, prefix: str, resource: str, kind: str, *, namespaced: bool = True) -> None:
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

        def get_object(request):
            for item in self.objects[resource]:
                metadata = item["metadata"]
                if metadata["name"] == request.params["name"] and metadata.get("namespace") == request.params.get(
                    "namespace"
                ):
                    return 200, {"kind": kind, "apiVersion": api_version, **item}
            return self.not_found(request)

        self.route("GET", rf"{prefix}/{resource}")(list_objects)
        if namespaced:
            self.route("GET", rf"{prefix}/namespaces/(?P<namespace>[^/]+)/{resource}")(list_objects)
            self.route("GET", rf"{prefix}/namespaces/(?P<namespace>[^/]+)/{resource}/(?P<name>[^/]+)")(get_object)
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
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"the server could not find the requested resource ({request.path})",
            "reason": "NotFound",
            "code": 404,
        }

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


def _selected(item: dict, selector: str) -> bool:
    labels = item["metadata"].get("labels", {})
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True
