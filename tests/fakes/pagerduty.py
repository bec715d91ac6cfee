"""The PagerDuty Events API v2 on 127.0.0.1 over TLS: validates events like the real one and tracks incidents."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.fakes.http_server import RecordingHttpServer, Request

ROUTING_KEY = "R0UT1NGKEYtradingteam0000000000"
SEVERITIES = {"critical", "error", "warning", "info"}


class FakePagerDuty(RecordingHttpServer):
    def __init__(self, tls_dir: Path):
        super().__init__(tls_dir=tls_dir)
        # dedup key -> "triggered" or "resolved", as PagerDuty's incidents for the service.
        self.incidents: dict[str, str] = {}
        self.route("POST", "/v2/enqueue")(self._answer)

    def not_found(self, request: Request) -> tuple[int, dict]:
        return 404, {"status": "invalid path"}

    def _answer(self, request: Request) -> tuple[int, dict]:
        event = request.json()
        if event.get("routing_key") != ROUTING_KEY:
            return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["routing_key"]}
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            return 400, {"status": "invalid event", "errors": ["'event_action' is invalid"]}
        dedup_key = event.get("dedup_key")
        if action == "trigger":
            payload = event.get("payload") or {}
            missing = [name for name in ("summary", "source", "severity") if not payload.get(name)]
            if missing or payload["severity"] not in SEVERITIES:
                return 400, {"status": "invalid event", "errors": [f"payload {missing or 'severity'} invalid"]}
            dedup_key = dedup_key or uuid.uuid4().hex
            self.incidents[dedup_key] = "triggered"
        elif not dedup_key:
            return 400, {"status": "invalid event", "errors": ["'dedup_key' is required"]}
        elif action == "resolve" and dedup_key in self.incidents:
            self.incidents[dedup_key] = "resolved"
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def connection_json(self) -> str:
        """An Airflow `pagerduty_events` connection whose host (and CA) point at this server."""
        return json.dumps(
            {
                "conn_type": "pagerduty_events",
                "host": "127.0.0.1",
                "port": self.port,
                "password": ROUTING_KEY,
                "extra": {"ca_bundle": str(self.ca_file)},
            }
        )

    def events(self) -> list[dict]:
        return [request.json() for request in self.requests]

    def only_page(self) -> dict:
        """The one event every request carried. The client sends an event again, identical, when its answer was
        lost or slow (two tests saw that on a busy CI machine); PagerDuty dedups such a repeat by its dedup_key,
        so the same event twice is still one page, while any other second event fails the assertion."""
        events = self.events()
        assert events, "nothing was paged"
        assert all(event == events[0] for event in events), f"more than one page: {events}"
        return events[0]

    def reset(self) -> None:
        super().reset()
        self.incidents.clear()
