"""A Prometheus-compatible instant query API (GET /api/v1/query) on 127.0.0.1 answering set values per query.

`values[query]` is the value of its one-sample vector, a list of values (one series each, as a query without
aggregation answers), or {instance: value} (one series per host, as node-exporter queries answer); a query not
listed answers an empty vector (no data). `error = (status, errorType, message)` makes every query fail the way
Prometheus does (503 while it starts or is overloaded, 422 for a query it cannot execute).
"""

from __future__ import annotations

import json

from tests.fakes.http_server import RecordingHttpServer, Request


class FakePrometheus(RecordingHttpServer):
    def __init__(self):
        super().__init__()
        self.values: dict[str, float | list[float] | dict[str, float]] = {}
        self.error: tuple[int, str, str] | None = None
        self.route("GET", "/api/v1/query")(self._answer)

    def not_found(self, request: Request) -> tuple[int, dict]:
        return 404, {"status": "error", "errorType": "not_found", "error": request.path}

    def _series(self, query: str) -> list[tuple[dict, float]]:
        values = self.values.get(query, [])
        if isinstance(values, dict):
            return [({"instance": instance, "job": "node"}, value) for instance, value in values.items()]
        return [
            ({"app": "trading-api", "instance": f"trading-api-{index}"}, value)
            for index, value in enumerate(values if isinstance(values, list) else [values])
        ]

    def _answer(self, request: Request) -> tuple[int, dict]:
        if self.error is not None:
            status, error_type, message = self.error
            return status, {"status": "error", "errorType": error_type, "error": message}
        query = request.query.get("query", [""])[0]
        if not query:
            return 400, {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query"'}
        evaluated_at = float(request.query.get("time", ["0"])[0])
        result = [
            {"metric": labels, "value": [evaluated_at, repr(float(value))]} for labels, value in self._series(query)
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def connection_json(self, login: str | None = None, password: str | None = None) -> str:
        """An Airflow `http` connection to this server, with basic-auth credentials when given."""
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http"}
        if login:
            conn.update(login=login, password=password)
        return json.dumps(conn)

    def queried_times(self) -> list[float]:
        return [float(request.query["time"][0]) for request in self.requests]

    def reset(self) -> None:
        super().reset()
        self.values.clear()
        self.error = None
