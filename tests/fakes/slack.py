"""A Slack incoming webhook on 127.0.0.1: records each message; answers `ok` as Slack does, or a chosen failure."""

from __future__ import annotations

import json

from tests.fakes.recording_server import RecordedRequest, RecordingServer

WEBHOOK_PATH = "T0TRADING/B0ALERTS/fake-webhook-token"


class FakeSlack(RecordingServer):
    def __init__(self):
        super().__init__(self._answer)
        self.failure: tuple[int, str] | None = None

    def _answer(self, request: RecordedRequest) -> tuple[int, str]:
        if request.method != "POST" or request.path != f"/services/{WEBHOOK_PATH}":
            return 404, "no_service"
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
