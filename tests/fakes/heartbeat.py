"""A healthchecks-style heartbeat service on 127.0.0.1: a ping is an HTTP request to /ping/<check uuid>.

Healthchecks.io (and PagerDuty's or Opsgenie's heartbeats) alert when no ping arrives within the check's period plus
grace; this fake records the pings, so a test can count them per run.
"""

from __future__ import annotations

import json

from tests.fakes.http_server import RecordingHttpServer, Request

CHECK_UUID = "5bf0a2c8-6d0e-4c53-9c3b-2f1de0c0e6a1"


class FakeHeartbeat(RecordingHttpServer):
    def __init__(self):
        super().__init__()
        self.route("POST", r"/ping/(?P<check>[0-9a-f-]{36})")(self._ping)
        self.route("GET", r"/ping/(?P<check>[0-9a-f-]{36})")(self._ping)

    def _ping(self, request: Request) -> tuple[int, str]:
        return 200, "OK"

    def pings(self) -> list[Request]:
        return [request for request in self.requests if request.path == f"/ping/{CHECK_UUID}"]

    def connection_json(self) -> str:
        """The `heartbeat` HTTP connection: the whole ping URL, as a healthchecks.io check's is."""
        return json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{self.port}/ping/{CHECK_UUID}"})
