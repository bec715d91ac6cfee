"""S3 on 127.0.0.1: moto's server (the real S3 wire protocol), behind a small proxy that can inject faults.

The proxy forwards every request to moto unchanged, except while a fault is armed for the requests it matches
(`fail_parts`): it answers them with an HTTP 500 or drops the connection without answering. Like a real store
(and unlike moto) it refuses any access key id but ACCESS_KEY with 403 InvalidAccessKeyId. It records each
request's method and path (`requests`) so tests can assert what the client did. Two more hooks into what the
store answers: `alter_etags` makes its HEAD answers for some keys carry another ETag (as a corrupted upload would),
and `set_modified` backdates objects (moto runs in this process), as os.utime does for files.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCESS_KEY, SECRET_KEY, REGION = "testing-key-id", "testing-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FaultyS3:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self._fault: tuple[str, int, str] | None = None  # (kind, remaining, path fragment)
        self._etag_fragment: str | None = None
        self._lock = threading.Lock()

    def start(self) -> FaultyS3:
        from moto.server import ThreadedMotoServer

        self.moto_port = _free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self.moto.start()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with fake._lock:
                    fake.requests.append((self.command, self.path))
                    fault = fake._take_fault(self.command, self.path)
                    alter_etag = self.command == "HEAD" and fake._etag_fragment and fake._etag_fragment in self.path
                if f"Credential={ACCESS_KEY}/" not in self.headers.get("Authorization", ""):
                    # moto checks no credentials; a real store refuses an unknown access key id like this.
                    fault = "403"
                if fault == "403":
                    payload = b"<Error><Code>InvalidAccessKeyId</Code><Message>unknown key</Message></Error>"
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "500":
                    payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", fake.moto_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    # A HEAD answer keeps moto's Content-Length: the size of the object, not of the (empty) body.
                    if key.lower() not in ("transfer-encoding", "connection") and (
                        key.lower() != "content-length" or self.command == "HEAD"
                    ):
                        if key.lower() == "etag" and alter_etag:
                            value = '"' + "0" * 32 + '"'
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.moto.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_parts(self, kind: str, times: int, fragment: str = "partNumber=") -> None:
        """The next `times` requests whose path holds `fragment` get `kind` ("500" or "drop")."""
        with self._lock:
            self._fault = (kind, times, fragment)

    def alter_etags(self, fragment: str) -> None:
        """HEAD answers for paths holding `fragment` carry an ETag that matches no upload."""
        with self._lock:
            self._etag_fragment = fragment

    def clear_faults(self) -> None:
        with self._lock:
            self._fault = None
            self._etag_fragment = None

    def set_modified(self, bucket: str, prefix: str, when: datetime) -> int:
        """Give every object of `bucket` under `prefix` the LastModified `when`; returns how many."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        keys = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket).keys
        changed = 0
        with self._lock:
            for name in list(keys):
                if name.startswith(prefix):
                    for version in keys.getlist(name):
                        version.last_modified = when.astimezone(UTC).replace(tzinfo=None)  # moto's are naive UTC
                        changed += 1
        return changed

    def _take_fault(self, method: str, path: str) -> str | None:
        if self._fault is None or method not in ("PUT", "POST"):
            return None
        kind, remaining, fragment = self._fault
        if fragment not in path:
            return None
        self._fault = (kind, remaining - 1, fragment) if remaining > 1 else None
        return kind

    def reset(self) -> None:
        """Empty every bucket of moto's store (its control endpoint) and forget the recorded requests."""
        connection = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=10)
        connection.request("POST", "/moto-api/reset")
        connection.getresponse().read()
        connection.close()
        self.requests.clear()
        self.clear_faults()

    def connection_json(self, *, key_id: str = ACCESS_KEY, config_kwargs: dict | None = None) -> str:
        """An Airflow `aws` connection for this server (`config_kwargs`: botocore's Config, e.g. its retries)."""
        extra = {"endpoint_url": self.endpoint, "region_name": REGION}
        if config_kwargs:
            extra["config_kwargs"] = config_kwargs
        return json.dumps({"conn_type": "aws", "login": key_id, "password": SECRET_KEY, "extra": extra})
