"""A Prometheus-compatible instant query API (GET /api/v1/query) on 127.0.0.1 answering set values per query."""

from __future__ import annotations

from tests.fakes.http_server import RecordingHttpServer, Request


class FakePrometheus(RecordingHttpServer):
    def __init__(self):
        super().__init__()
        # PromQL text -> the value of its one-sample vector; a query not listed has no data (empty vector).
        self.values: dict[str, float] = {}
        self.route("GET", "/api/v1/query")(self._answer)

    def not_found(self, request: Request) -> tuple[int, dict]:
        return 404, {"status": "error", "errorType": "not_found", "error": request.path}

    def _answer(self, request: Request) -> tuple[int, dict]:
        query = request.query.get("query", [""])[0]
        if not query:
            return 400, {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query"'}
        evaluated_at = float(request.query.get("time", ["0"])[0])
        result = (
            [{"metric": {"app": "trading-api"}, "value": [evaluated_at, repr(float(self.values[query]))]}]
            if query in self.values
            else []
        )
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def queried_times(self) -> list[float]:
        return [float(request.query["time"][0]) for request in self.requests]

    def reset(self) -> None:
        super().reset()
        self.values.clear()
