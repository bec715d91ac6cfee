"""Real TLS servers on 127.0.0.1 with certificates made by `trustme`, for the certificate and protocol probes.

`TlsServer(cert, minimum_version=...)` completes a TLS handshake with each client and closes; `connections` counts
the accepted TCP connections. With `minimum_version="TLSv1"` it also accepts TLS 1.0 and 1.1, as an old appliance
would.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings

import trustme


class TlsServer:
    def __init__(self, cert: trustme.LeafCert, minimum_version: str = "TLSv1_2") -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(self.context)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.context.minimum_version = getattr(ssl.TLSVersion, minimum_version)
        if minimum_version in ("TLSv1", "TLSv1_1"):
            self.context.set_ciphers("ALL:@SECLEVEL=0")
        self.connections = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                client, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            client.settimeout(5)
            try:
                with self.context.wrap_socket(client, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                client.close()

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close()
