"""A Slack incoming webhook on 127.0.0.1: records each message; answers `ok` as Slack does, or a chosen failure."""

from __future__ import annotations

import json

from tests.fakes.http_server import RecordingHttpServer, Request

WEBHOOK_PATH = "T0TRADING/B0ALERTS/fake-webhook-token"


class FakeSlack(RecordingHttpServer):
    def __init__(self):
        super().__init__()
        self.failure: tuple[int, str] | None = None
        self.route("POST", f"/services/{WEBHOOK_PATH}")(self._answer)

    def not_found(self, request: Request) -> tuple[int, str]:
        return 404, "no_service"

    def _answer(self, request: Request) -> tuple[int, str]:
        if self.failure:
            return self.failure
        if not request.json().get("text"):
            return 400, "no_text"
        return 200, "ok"

    def connection_json(self, token: str = WEBHOOK_PATH) -> str:
        """An Airflow `slackwebhook` connection to this server (the `://` in host keeps it on http)."""
        return json.dumps({"conn_type": "slackwebhook", "host": f"{self.url}/services", "password": token})

    def messages(self) -> list[dict]:
        return [request.json() for request in self.requests]

    def reset(self) -> None:
        super().reset()
        self.failure = None
