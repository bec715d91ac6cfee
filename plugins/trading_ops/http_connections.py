"""HTTP services reached through Airflow connections (type `http`) with the provider's HttpHook.

The connection holds everything about the endpoint: scheme (`schema`), host, port, basic-auth login and password,
headers and TLS options in its extra (`verify` for a CA bundle or false, `cert`, `proxies`), so moving a service or
rotating its credentials is a change in Airflow, not in the code or the policy.
"""

from __future__ import annotations


def http_session(conn_id: str):
    """(requests session, base URL) of an HTTP Airflow connection, through the provider's HttpHook."""
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="GET", http_conn_id=conn_id)
    session = hook.get_conn()
    return session, hook.base_url.rstrip("/")
