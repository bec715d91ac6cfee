"""ssl_cert_check against real TLS servers on 127.0.0.1 with trustme certificates, and PostgreSQL's STARTTLS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trustme

from tests.fakes.tls_server import TlsServer
from trading_ops.dev.localpg import free_port
from trading_ops.policy import load_policy
from trading_ops.security.findings import CheckSourceError
from trading_ops.security.tls import ssl_cert_check

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def check(ca, tmp_path, make_policy):
    """Run ssl_cert_check over `endpoints` trusting `trusted` (the test CA by default)."""

    def _check(*endpoints, trusted=None, as_of=NOW, **changes):
        ca_file = tmp_path / "ca.pem"
        (trusted or ca).cert_pem.write_to_path(str(ca_file))
        make_policy(
            {
                "security.tls.endpoints": [
                    {"host": "127.0.0.1", "port": port, **({"starttls": starttls} if starttls else {})}
                    for port, starttls in (e if isinstance(e, tuple) else (e, None) for e in endpoints)
                ],
                "security.tls.ca_file": str(ca_file),
                **changes,
            }
        )
        return {f.subject: f for f in ssl_cert_check(load_policy(), as_of)}

    return _check


def test_a_good_certificate_has_no_findings(ca, check):
    with TlsServer(ca.issue_cert("127.0.0.1", "localhost", not_after=NOW + timedelta(days=300))) as server:
        assert check(server.port) == {}
        assert server.connections >= 3, "a fetch, a verified handshake and the old-protocol probes"


@pytest.mark.parametrize(("days", "severity"), [(20, "warning"), (5, "critical")])
def test_expiry_warns_at_30_days_and_is_critical_at_7(ca, check, days, severity):
    cert = ca.issue_cert("127.0.0.1", not_after=NOW + timedelta(days=days, hours=1))
    with TlsServer(cert) as server:
        findings = check(server.port)
    expiry = findings.pop(f"127.0.0.1:{server.port} certificate expiry")
    assert expiry.severity == severity and f"expires in {days} days" in expiry.message
    assert expiry.evidence["days_left"] == pytest.approx(days, abs=0.1)
    assert findings == {}


def test_days_to_expiry_count_from_the_runs_date(ca, check):
    with TlsServer(ca.issue_cert("127.0.0.1", not_after=NOW + timedelta(days=40))) as server:
        assert check(server.port) == {}
        later = check(server.port, as_of=NOW + timedelta(days=15))
    assert later[f"127.0.0.1:{server.port} certificate expiry"].severity == "warning"


def test_an_expired_certificate_is_critical_once(ca, check):
    cert = ca.issue_cert("127.0.0.1", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=3))
    with TlsServer(cert) as server:
        findings = check(server.port)
    assert list(findings) == [f"127.0.0.1:{server.port} certificate expiry"], "not also reported as a chain error"
    assert findings[f"127.0.0.1:{server.port} certificate expiry"].severity == "critical"
    assert "expired on" in findings[f"127.0.0.1:{server.port} certificate expiry"].message


def test_a_certificate_for_another_host_is_critical(ca, check):
    with TlsServer(ca.issue_cert("trading-db.internal", not_after=NOW + timedelta(days=300))) as server:
        findings = check(server.port)
    hostname = findings[f"127.0.0.1:{server.port} hostname"]
    assert hostname.severity == "critical" and "it names trading-db.internal" in hostname.message
    assert list(findings) == [f"127.0.0.1:{server.port} hostname"]


def test_an_untrusted_chain_is_critical(ca, check):
    with TlsServer(ca.issue_cert("127.0.0.1", not_after=NOW + timedelta(days=300))) as server:
        findings = check(server.port, trusted=trustme.CA())
    chain = findings[f"127.0.0.1:{server.port} certificate chain"]
    assert chain.severity == "critical" and "unable to get local issuer certificate" in chain.message


def test_protocols_below_tls_1_2_are_reported(ca, check):
    cert = ca.issue_cert("127.0.0.1", not_after=NOW + timedelta(days=300))
    with TlsServer(cert, minimum_version="TLSv1") as old, TlsServer(cert) as modern:
        findings = check(old.port, modern.port)
    protocol = findings.pop(f"127.0.0.1:{old.port} protocol")
    assert protocol.severity == "warning" and protocol.evidence["accepted_old_protocols"] == ["TLSv1", "TLSv1.1"]
    assert findings == {}


def test_a_server_without_tls_on_postgres_starttls_is_critical(pg_cluster, check):
    """The shared test cluster runs with ssl = off: it answers N to the SSLRequest."""
    findings = check((pg_cluster.port, "postgres"))
    no_tls = findings[f"127.0.0.1:{pg_cluster.port} tls"]
    assert no_tls.severity == "critical" and "refused SSLRequest" in no_tls.message


def test_an_unreachable_endpoint_fails_the_check_after_trying_all(ca, check):
    closed = free_port()
    with TlsServer(ca.issue_cert("127.0.0.1", not_after=NOW + timedelta(days=300))) as server:
        with pytest.raises(
            CheckSourceError, match=rf"^Cannot check TLS of 127.0.0.1:{closed} \(Connection refused\)\.$"
        ):
            check(closed, server.port)
        assert server.connections >= 2, "the reachable endpoint was still checked"
