"""firewall_rule_review on real nft/iptables output and NetworkPolicies served by a Kubernetes API on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fakes.kubernetes_api import NETWORKING, KubernetesApiFake
from trading_ops.policy import load_policy
from trading_ops.security.findings import CheckSourceError
from trading_ops.security.firewall import firewall_rule_review

DATA = Path(__file__).parent / "data" / "security"
AS_OF = datetime(2026, 11, 2, tzinfo=UTC)
NETWORK_POLICIES_PATH = f"{NETWORKING}/namespaces/trading/networkpolicies"


@pytest.fixture
def kubernetes(tmp_path, monkeypatch):
    with KubernetesApiFake() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="trading")
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", fake.connection_json(kubeconfig, "trading"))
        fake.add_network_policy("trading", "default-deny-ingress", {}, ingress=None)
        fake.add_network_policy(
            "trading",
            "allow-trading-api-to-db",
            {"app": "trading-db"},
            ingress=[
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "trading-api"}}}],
                    "ports": [{"protocol": "TCP", "port": 5432}],
                }
            ],
        )
        # Another namespace's policies are not this review's business.
        fake.add_network_policy("dev", "allow-all", {}, ingress=[{}])
        yield fake


@pytest.fixture
def review(make_policy):
    def _review(command: list[str], fmt: str = "nft-json"):
        make_policy({"security.firewall.command": command, "security.firewall.format": fmt})
        return {f.subject: f for f in firewall_rule_review(load_policy(), AS_OF)}

    return _review


def test_rules_matching_the_baseline_have_no_findings(kubernetes, review):
    assert review(["cat", str(DATA / "nft-good.json")]) == {}
    assert NETWORK_POLICIES_PATH in kubernetes.paths("GET")


def test_drift_and_any_source_allows_on_protected_ports(kubernetes, review):
    findings = review(["cat", str(DATA / "nft-drifted.json")])
    assert {subject: f.severity for subject, f in findings.items()} == {
        "host any-source allow tcp/5432": "critical",
        "host any-source allow tcp/6443": "critical",  # `ip saddr != 10.20.0.0/16` in a jumped-to chain
        "host unexpected allow tcp/8080 from 10.30.0.0/16": "warning",
        "host unexpected allow tcp/9090 from 10.30.0.0/16": "warning",
        "host unexpected allow udp/1000-2000 from 192.0.2.0/24": "warning",
        "host missing baseline allow tcp/443 from any": "warning",
        "host missing baseline allow tcp/5432 from 10.20.0.0/16": "warning",
        "host default accept inet filter input": "warning",
    }
    assert findings["host any-source allow tcp/5432"].evidence == {"rule": "inet filter input handle 6"}
    assert "exposing 5432 (postgresql)" in findings["host any-source allow tcp/5432"].message


def test_iptables_save_output(kubernetes, review):
    findings = review(["cat", str(DATA / "iptables-save.txt")], "iptables-save")
    assert {subject: f.severity for subject, f in findings.items()} == {
        "host any-source allow tcp/5432": "critical",
        "host any-source allow tcp/8080": "critical",
    }
    assert findings["host any-source allow tcp/8080"].evidence["rule"] == (
        "-A ADMIN -p tcp -m multiport --dports 5432,8080 -j ACCEPT"
    )


def test_network_policies_open_to_everyone_or_off_baseline(kubernetes, review):
    kubernetes.objects["networkpolicies"] = [
        obj for obj in kubernetes.objects["networkpolicies"] if obj["metadata"]["name"] != "default-deny-ingress"
    ]
    kubernetes.add_network_policy(
        "trading",
        "debug-db-access",
        {"app": "trading-db"},
        ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 5432}]}],
    )
    kubernetes.add_network_policy(
        "trading", "allow-metrics", {"app": "trading-api"}, ingress=[{"ports": [{"port": 9090}]}]
    )
    findings = review(["cat", str(DATA / "nft-good.json")])
    assert {subject: f.severity for subject, f in findings.items()} == {
        "networkpolicy trading/default-deny-ingress missing": "warning",
        "networkpolicy trading/debug-db-access unlisted": "warning",
        "networkpolicy trading/debug-db-access any-source 5432": "critical",
        "networkpolicy trading/allow-metrics unlisted": "warning",
    }
    assert findings["networkpolicy trading/debug-db-access any-source 5432"].evidence == {
        "pod_selector": {"match_expressions": None, "match_labels": {"app": "trading-db"}}
    }


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["false"], r"^Cannot read the host firewall rules: false exited with 1\.$"),
        (["nft", "--no-such-option"], r"^Cannot read the host firewall rules: nft exited with 1: .*no-such-option"),
        (
            ["nft-not-installed-here"],
            r"^Cannot read the host firewall rules: the command 'nft-not-installed-here' is not",
        ),
        (["echo", "Error: Operation not permitted"], r"^The firewall command did not print `nft -j` JSON\.$"),
    ],
)
def test_a_firewall_command_that_fails_fails_the_check(kubernetes, review, command, message):
    with pytest.raises(CheckSourceError, match=message):
        review(command)


def test_an_unreachable_kubernetes_api_fails_the_check(review, tmp_path, monkeypatch):
    stopped = KubernetesApiFake().start()
    kubeconfig = stopped.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", stopped.connection_json(kubeconfig, "trading"))
    stopped.stop()
    with pytest.raises(
        CheckSourceError,
        match=r"^Cannot read the NetworkPolicies of namespace trading: the Kubernetes API of kubernetes_default "
        r"is unreachable \(",
    ):
        review(["cat", str(DATA / "nft-good.json")])


def test_a_kubernetes_api_error_fails_the_check(kubernetes, review):
    kubernetes.fail_with = 403
    with pytest.raises(
        CheckSourceError,
        match=r"^Cannot read the NetworkPolicies of namespace trading: the Kubernetes API of kubernetes_default "
        r"answered 403 ",
    ):
        review(["cat", str(DATA / "nft-good.json")])


def _can_load_nft_rules() -> bool:
    if not (shutil.which("unshare") and shutil.which("nft")):
        return False
    probe = subprocess.run(["unshare", "-n", "nft", "list", "ruleset"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_load_nft_rules(), reason="needs nft and a private network namespace (root)")
def test_real_nft_output_in_a_private_network_namespace(kubernetes, review):
    """Load the drifted ruleset into a throwaway network namespace and review what nft itself prints."""
    ruleset = DATA / "nft-drifted.nft"
    live = review(["unshare", "-n", "sh", "-c", f"nft -f {ruleset} && nft -j list ruleset"])
    recorded = review(["cat", str(DATA / "nft-drifted.json")])
    assert {s: f.severity for s, f in live.items()} == {s: f.severity for s, f in recorded.items()}
