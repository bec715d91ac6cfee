"""A local stand-in for Slack's incoming webhooks and PagerDuty's Events API v2, so `make up` delivers its alerts,
and for a heartbeat service (system_health's dead man's switch): each ping overwrites `<dir>/heartbeat.json`.

`make up` starts it in its own process (`python -m trading_ops.dev alert-sink <dir>`) and wires the `slack_alerts`
and `pagerduty_events` connections to it; every message is appended as one JSON line to `<dir>/alerts.jsonl`, which
`make alerts` prints. Slack is served over http (a `slackwebhook` connection's host may name the scheme). PagerDuty
needs https: the `pagerduty` client refuses any other scheme, so that port serves TLS with a certificate of a fresh
local CA, handed to the project's PagerDuty hook through the connection's extra `ca_bundle`, as a relay with a
private CA would be.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ALERTS_FILE = "alerts.jsonl"
HEARTBEAT_FILE = "heartbeat.json"
ENDPOINTS_FILE = "alert-sink.json"
# Any path after /services/ and any routing key are accepted; these only make the connections look like real ones.
SLACK_WEBHOOK_TOKEN = "T0LOCAL/B0ALERTS/local-alert-sink"
PAGERDUTY_ROUTING_KEY = "local0alert0sink0routing0key0000"


@dataclass(frozen=True)
class SinkEndpoints:
    """Where a running sink listens; written to `alert-sink.json` once both ports accept connections."""

    pid: int
    slack_port: int
    pagerduty_port: int
    ca_file: str
    heartbeat_port: int

    def heartbeat_connection(self) -> str:
        """The `heartbeat` HTTP connection: the whole ping URL, as a healthchecks.io check's."""
        return json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{self.heartbeat_port}/ping/system_health"})

    def slack_connection(self) -> str:
        """The `slack_alerts` connection (AIRFLOW_CONN_SLACK_ALERTS) pointing at this sink."""
        host = f"http://127.0.0.1:{self.slack_port}/services"
        return json.dumps({"conn_type": "slackwebhook", "host": host, "password": SLACK_WEBHOOK_TOKEN})

    def pagerduty_connection(self) -> str:
        """The `pagerduty_events` connection pointing at this sink (the hook builds https://host:port)."""
        return json.dumps(
            {
                "conn_type": "pagerduty_events",
                "host": "127.0.0.1",
                "port": self.pagerduty_port,
                "password": PAGERDUTY_ROUTING_KEY,
                "extra": {"ca_bundle": self.ca_file},
            }
        )

    @classmethod
    def read(cls, directory: Path) -> SinkEndpoints | None:
        path = directory / ENDPOINTS_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


class AlertLog:
    """The messages received, one JSON object a line; appended under a lock (the servers are threaded)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps({"received": datetime.now(UTC).isoformat(timespec="seconds"), **record}) + "\n"
        with self._lock, open(self.path, "a") as log:
            log.write(line)


def slack_reply(body: dict, alerts: AlertLog) -> tuple[int, str]:
    """What Slack answers an incoming-webhook POST: `ok`, or `no_text` for a message without text."""
    if not body.get("text"):
        return 400, "no_text"
    alerts.append({"to": "slack", "channel": body.get("channel"), "text": body["text"]})
    return 200, "ok"


def pagerduty_reply(event: dict, alerts: AlertLog) -> tuple[int, dict]:
    """What the Events API v2 answers an enqueue: 202 with the dedup key (a new one for a trigger without)."""
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        return 400, {"status": "invalid event", "errors": ["'event_action' is invalid"]}
    dedup_key = event.get("dedup_key") or uuid.uuid4().hex
    payload = event.get("payload") or {}
    alerts.append(
        {
            "to": "pagerduty",
            "action": action,
            "dedup_key": dedup_key,
            "severity": payload.get("severity"),
            "summary": payload.get("summary"),
        }
    )
    return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


def heartbeat_reply(body: dict, directory: Path) -> tuple[int, str]:
    """A ping: the last one is kept (when, and what it said), as a heartbeat service shows it."""
    (directory / HEARTBEAT_FILE).write_text(json.dumps({"received": datetime.now(UTC).isoformat(), **body}))
    return 200, "OK"


def _server(route: str, reply, alerts) -> ThreadingHTTPServer:
    """A server on a free 127.0.0.1 port answering POSTs under `route` with `reply(json body, alerts)`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not self.path.startswith(route):
                status, answer = 404, "not found"
            else:
                try:
                    status, answer = reply(json.loads(self.rfile.read(length) or b"{}"), alerts)
                except ValueError:
                    status, answer = 400, "invalid JSON"
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args) -> None:
            # Each request is in alerts.jsonl already.
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def serve(directory: Path) -> None:
    """Run the sink until SIGTERM; `alert-sink.json` appears once both servers listen."""
    import trustme

    alerts = AlertLog(directory / ALERTS_FILE)
    slack = _server("/services/", slack_reply, alerts)
    pagerduty = _server("/v2/enqueue", pagerduty_reply, alerts)
    heartbeat = _server("/ping/", heartbeat_reply, directory)
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    pagerduty.socket = tls.wrap_socket(pagerduty.socket, server_side=True)
    ca_file = directory / "alert-sink-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    for server in (slack, pagerduty, heartbeat):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoints = SinkEndpoints(
        os.getpid(), slack.server_address[1], pagerduty.server_address[1], str(ca_file), heartbeat.server_address[1]
    )
    staged = directory / f".{ENDPOINTS_FILE}"
    staged.write_text(json.dumps(asdict(endpoints)))
    staged.rename(directory / ENDPOINTS_FILE)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for server in (slack, pagerduty, heartbeat):
        server.shutdown()
    (directory / ENDPOINTS_FILE).unlink(missing_ok=True)


def read_alerts(directory: Path) -> list[dict]:
    path = directory / ALERTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def format_alert(alert: dict) -> str:
    """One received message as `make alerts` prints it."""
    if alert["to"] == "slack":
        return f"{alert['received']}  slack {alert['channel'] or '(webhook default)'}\n{alert['text']}\n"
    return (
        f"{alert['received']}  pagerduty {alert['action']} {alert['severity'] or ''} "
        f"[{alert['dedup_key']}]\n{alert['summary'] or ''}\n"
    )
