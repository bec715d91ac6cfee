"""ssl_cert_check: certificates and protocol versions of the policy's TLS endpoints, PostgreSQL's STARTTLS included.

For each endpoint: the certificate's days to expiry (warning at `warning_days`, critical at `critical_days` or
expired), whether the chain verifies against the trust store (`ca_file`, or the system's) and the certificate
names the host, and which protocol versions below `min_version` the server still accepts. PostgreSQL does not
start TLS on connect: the client asks with an SSLRequest packet and the server answers `S` or `N` (no TLS at all,
a critical finding). An endpoint that cannot be reached fails the check after all endpoints were tried.
"""

from __future__ import annotations

import socket
import ssl
import struct
import warnings
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from trading_ops.policy import Policy, TlsEndpoint
from trading_ops.security.findings import CheckSourceError, Finding

CHECK = "ssl_cert_check"
_POSTGRES_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_PROTOCOLS_BY_AGE = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_TLS_VERSION = {
    "TLSv1": "TLSv1",
    "TLSv1.1": "TLSv1_1",
    "TLSv1.2": "TLSv1_2",
    "TLSv1.3": "TLSv1_3",
}
# A server that refuses an old protocol may drop the connection instead of sending an alert.
_REFUSED_HANDSHAKE = (ssl.SSLError, ConnectionResetError, BrokenPipeError)
# OpenSSL's X509_V_ERR_* codes that the expiry finding or the hostname finding already report.
_CERT_HAS_EXPIRED = 10
# 62: a DNS name not in the certificate, 64: an IP address not in it.
_NAME_MISMATCH = (62, 64)


class NoTls(Exception):
    """The server answered but does not speak TLS there."""


def open_socket(host: str, port: int, starttls: str | None, timeout: float) -> socket.socket:
    """A connected socket ready for the TLS handshake (after PostgreSQL's SSLRequest when `starttls`)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if starttls == "postgres":
        try:
            sock.sendall(_POSTGRES_SSL_REQUEST)
            answer = sock.recv(1)
        except OSError:
            sock.close()
            raise
        if answer != b"S":
            sock.close()
            raise NoTls(f"the PostgreSQL server at {host}:{port} refused SSLRequest (answered {answer!r})")
    return sock


def _any_protocol_context(version: str | None = None) -> ssl.SSLContext:
    """A context that completes a handshake with any server, optionally pinned to one protocol version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Old protocols and ciphers are what this probe looks for, so OpenSSL's own floor must not hide them.
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls_version = getattr(ssl.TLSVersion, _TLS_VERSION[version or "TLSv1"])
        context.minimum_version = tls_version
        if version:
            context.maximum_version = tls_version
    return context


def handshake(host: str, port: int, starttls: str | None, timeout: float, context: ssl.SSLContext, server_name: str):
    """(DER certificate, negotiated protocol) after a handshake with `context`."""
    with (
        open_socket(host, port, starttls, timeout) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        return tls.getpeercert(binary_form=True), tls.version()


def accepted_protocols_below(host: str, port: int, starttls: str | None, timeout: float, minimum: str) -> list[str]:
    """The protocol versions older than `minimum` that the server completes a handshake with."""
    accepted = []
    for version in _PROTOCOLS_BY_AGE[: _PROTOCOLS_BY_AGE.index(minimum)]:
        try:
            handshake(host, port, starttls, timeout, _any_protocol_context(version), host)
        except _REFUSED_HANDSHAKE:
            continue
        accepted.append(version)
    return accepted


def _names(certificate: x509.Certificate) -> dict:
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = [str(name.value) for name in alternative]
    except x509.ExtensionNotFound:
        san = []
    return {
        "subject": common_names[0].value if common_names else certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "san": san,
        "not_after": certificate.not_valid_after_utc.isoformat(),
    }


def check_endpoint(endpoint: TlsEndpoint, policy: Policy, as_of: datetime) -> list[Finding]:
    tls = policy.security.tls
    timeout = tls.timeout.total_seconds()
    name = f"{endpoint.host}:{endpoint.port}"
    try:
        der, protocol = handshake(
            endpoint.host, endpoint.port, endpoint.starttls, timeout, _any_protocol_context(), endpoint.host
        )
    except NoTls as exc:
        return [Finding(CHECK, "critical", f"{name} tls", f"{name} does not offer TLS: {exc}", {})]
    except _REFUSED_HANDSHAKE as exc:
        return [Finding(CHECK, "critical", f"{name} tls", f"{name} failed the TLS handshake: {exc}", {})]
    certificate = x509.load_der_x509_certificate(der)
    evidence = {**_names(certificate), "protocol": protocol, "starttls": endpoint.starttls}
    findings = []

    days_left = (certificate.not_valid_after_utc - as_of).total_seconds() / 86400
    evidence["days_left"] = round(days_left, 1)
    if days_left < 0:
        expiry = ("critical", f"the certificate of {name} expired on {evidence['not_after'][:10]}")
    elif days_left <= tls.critical_days:
        expiry = (
            "critical",
            f"the certificate of {name} expires in {days_left:.0f} days ({evidence['not_after'][:10]})",
        )
    elif days_left <= tls.warning_days:
        expiry = (
            "warning",
            f"the certificate of {name} expires in {days_left:.0f} days ({evidence['not_after'][:10]})",
        )
    else:
        expiry = None
    if expiry:
        findings.append(Finding(CHECK, expiry[0], f"{name} certificate expiry", expiry[1], evidence))

    verifying = ssl.create_default_context(cafile=tls.ca_file)
    try:
        handshake(endpoint.host, endpoint.port, endpoint.starttls, timeout, verifying, endpoint.host)
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in _NAME_MISMATCH:
            findings.append(
                Finding(
                    CHECK,
                    "critical",
                    f"{name} hostname",
                    f"the certificate of {name} does not name {endpoint.host} "
                    f"(it names {', '.join(evidence['san']) or evidence['subject']})",
                    evidence,
                )
            )
        elif exc.verify_code != _CERT_HAS_EXPIRED:
            findings.append(
                Finding(
                    CHECK,
                    "critical",
                    f"{name} certificate chain",
                    f"the certificate chain of {name} does not verify: {exc.verify_message}",
                    {**evidence, "verify_code": exc.verify_code},
                )
            )
    except _REFUSED_HANDSHAKE:
        pass  # a server that only speaks old protocols fails here; the protocol finding below says so

    old = accepted_protocols_below(endpoint.host, endpoint.port, endpoint.starttls, timeout, tls.min_version)
    if old:
        findings.append(
            Finding(
                CHECK,
                "warning",
                f"{name} protocol",
                f"{name} accepts {', '.join(old)}, older than the policy's minimum {tls.min_version}",
                {**evidence, "accepted_old_protocols": old},
            )
        )
    return findings


def ssl_cert_check(policy: Policy, as_of: datetime) -> list[Finding]:
    findings: list[Finding] = []
    unreachable = []
    for endpoint in policy.security.tls.endpoints:
        try:
            findings += check_endpoint(endpoint, policy, as_of)
        except OSError as exc:
            unreachable.append(f"{endpoint.host}:{endpoint.port} ({exc.strerror or exc})")
    if unreachable:
        raise CheckSourceError(f"Cannot check TLS of {', '.join(unreachable)}.")
    return findings
