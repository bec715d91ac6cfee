"""A small threaded HTTP(S) server on 127.0.0.1 with routes and a record of every request, for the service fakes.

A fake registers handlers with `route(method, regex)`; a handler gets the `Request` (with the regex's named groups
in `params`) and returns (status, body): a str body is sent as text, anything else as JSON. Unknown paths answer
404. `fail_with = 503` makes every request fail, to show that a check whose source is broken fails instead of
reporting "clean". With `tls_dir`, it serves HTTPS with a certificate from a fresh `trustme` CA, whose PEM it
writes to `ca_file` for the client.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self):
        return json.loads(self.body or b"null")


Handler = Callable[[Request], tuple[int, object]]


class RecordingHttpServer:
    def __init__(self, *, tls_dir: Path | None = None) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []
        self.requests: list[Request] = []
        self.fail_with: int | None = None
        self.port: int | None = None
        self.tls_dir = tls_dir
        self.ca_file: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append((method, re.compile(pattern), handler))
            return handler

        return register

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def start(self) -> RecordingHttpServer:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers=dict(self.headers.items()),
                    body=self.rfile.read(length) if length else b"",
                )
                fake.requests.append(request)
                status, body = fake.dispatch(request)
                text = isinstance(body, str)
                data = body.encode() if text else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        if self.tls_dir is not None:
            import trustme

            ca = trustme.CA()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1").configure_cert(context)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.ca_file = self.tls_dir / "fake-ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
        # Kept after stop(): a stopped fake's URL is how tests point a client at a closed port.
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def dispatch(self, request: Request) -> tuple[int, object]:
        if self.fail_with is not None:
            return self.fail_with, {"message": "service unavailable"}
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                return handler(request)
        return self.not_found(request)

    def not_found(self, request: Request) -> tuple[int, object]:
        return 404, {"message": "Not Found"}

    def reset(self) -> None:
        self.requests.clear()
        self.fail_with = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
