"""A Prometheus-compatible instant query API (GET /api/v1/query) on 127.0.0.1 answering set values per query."""

from __future__ import annotations

import json

from tests.fakes.http_server import RecordingHttpServer, Request


class FakePrometheus(RecordingHttpServer):
    def __init__(self):
        super().__init__()
        # PromQL text -> the value of its one-sample vector, or a list of values (one series each, as a query
        # without aggregation answers); a query not listed has no data (empty vector).
        self.values: dict[str, float | list[float]] = {}
        self.route("GET", "/api/v1/query")(self._answer)

    def not_found(self, request: Request) -> tuple[int, dict]:
        return 404, {"status": "error", "errorType": "not_found", "error": request.path}

    def _answer(self, request: Request) -> tuple[int, dict]:
        query = request.query.get("query", [""])[0]
        if not query:
            return 400, {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query"'}
        evaluated_at = float(request.query.get("time", ["0"])[0])
        values = self.values.get(query, [])
        result = [
            {
                "metric": {"app": "trading-api", "instance": f"trading-api-{index}"},
                "value": [evaluated_at, repr(float(v))],
            }
            for index, v in enumerate(values if isinstance(values, list) else [values])
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
