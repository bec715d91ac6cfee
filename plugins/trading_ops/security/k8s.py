"""Kubernetes API reads for the security checks, through the provider's KubernetesHook and its Airflow connection.

The hook builds the `kubernetes` client from the connection (a kubeconfig path, or in-cluster credentials); any
error reaching the API server becomes a `CheckSourceError`, so an unreachable cluster never reads as "no
findings".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from trading_ops.security.findings import CheckSourceError

T = TypeVar("T")


def read_api(conn_id: str, what: str, call: Callable[..., T]) -> T:
    """`call(api_client)` with the client of connection `conn_id`; failures name `what` could not be read."""
    import urllib3
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes.client.exceptions import ApiException

    try:
        return call(KubernetesHook(conn_id=conn_id).api_client)
    except ApiException as exc:
        raise CheckSourceError(f"Cannot read {what} from Kubernetes ({conn_id}): {exc.status} {exc.reason}.") from None
    except urllib3.exceptions.HTTPError as exc:
        raise CheckSourceError(f"Cannot reach the Kubernetes API of {conn_id} to read {what}: {exc}") from None
