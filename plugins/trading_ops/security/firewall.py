"""firewall_rule_review: the host firewall and the Kubernetes NetworkPolicies against the policy's baseline.

Host rules come from the policy's command (`nft -j list ruleset`, or `iptables-save`; prefix it with `ssh HOST`
for another machine). The review follows the input hook (INPUT chain) and the chains it jumps to, and reduces
every accepting rule to (protocol, port, source), ignoring loopback and established-connection rules. A jump's
own conditions are not carried into the target chain, so the review errs on the side of reporting.

Severities: an any-source allow on a protected port (database, ssh, admin APIs) is critical; an allow that is not
in the baseline, a baseline allow that is gone, an input chain whose default policy accepts, a missing or
unlisted NetworkPolicy are warnings; a NetworkPolicy ingress open to every source on a protected port is critical.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from dataclasses import dataclass
from datetime import datetime

from trading_ops.policy import Policy
from trading_ops.security.findings import CheckSourceError, Finding
from trading_ops.security.sources import read_kubernetes, run_command

CHECK = "firewall_rule_review"
ANY = "any"
ALL_PORTS = "all"


@dataclass(frozen=True)
class AllowRule:
    protocol: str  # tcp, udp or any
    ports: tuple[str, ...]  # "22", "1000-2000", or ALL_PORTS
    sources: tuple[str, ...]  # CIDRs, or ANY
    rule: str  # where the rule is, for the evidence


@dataclass
class RuleSet:
    allows: list[AllowRule]
    default_accept_chains: list[str]


def normalize_source(text: str) -> str:
    if text in (ANY, "0.0.0.0/0", "::/0"):
        return ANY
    return str(ipaddress.ip_network(text, strict=False))


# --- nftables (`nft -j list ruleset`) ------------------------------------------------------------------------


def _nft_values(right, sets: dict[str, list]) -> list:
    if isinstance(right, str) and right.startswith("@"):
        return [value for element in sets.get(right[1:], []) for value in _nft_values(element, sets)]
    if isinstance(right, dict) and "set" in right:
        return [value for element in right["set"] for value in _nft_values(element, sets)]
    if isinstance(right, dict) and "elem" in right:
        return _nft_values(right["elem"]["val"], sets)
    return [right]


def _nft_port(value) -> str:
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return f"{low}-{high}"
    return str(value)


def _nft_address(value) -> str:
    if isinstance(value, dict) and "prefix" in value:
        return normalize_source(f"{value['prefix']['addr']}/{value['prefix']['len']}")
    if isinstance(value, dict) and "range" in value:
        return "-".join(value["range"])
    return normalize_source(str(value))


def parse_nft(text: str) -> RuleSet:
    try:
        objects = json.loads(text)["nftables"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckSourceError("The firewall command did not print `nft -j` JSON.") from None
    chains: dict[tuple, dict] = {}
    rules: dict[tuple, list[dict]] = {}
    sets: dict[tuple, dict[str, list]] = {}
    for item in objects:
        if "chain" in item:
            chain = item["chain"]
            chains[(chain["family"], chain["table"], chain["name"])] = chain
        elif "rule" in item:
            rule = item["rule"]
            rules.setdefault((rule["family"], rule["table"], rule["chain"]), []).append(rule)
        elif "set" in item:
            named = item["set"]
            sets.setdefault((named["family"], named["table"]), {})[named["name"]] = named.get("elem", [])

    result = RuleSet([], [])
    visited: set[tuple] = set()

    def walk(key: tuple) -> None:
        if key in visited:
            return
        visited.add(key)
        table_sets = sets.get(key[:2], {})
        for rule in rules.get(key, []):
            protocol, ports, sources, skip, verdict = ANY, [ALL_PORTS], [ANY], False, None
            for statement in rule["expr"]:
                if "match" in statement:
                    match = statement["match"]
                    left, negated = match["left"], match["op"] == "!="
                    values = _nft_values(match["right"], table_sets)
                    payload = left.get("payload", {}) if isinstance(left, dict) else {}
                    meta_key = left.get("meta", {}).get("key") if isinstance(left, dict) else None
                    if isinstance(left, dict) and left.get("ct", {}).get("key") == "state":
                        skip = skip or "new" not in values
                    elif meta_key in ("iif", "iifname") and values == ["lo"] and not negated:
                        skip = True
                    elif payload.get("field") == "dport":
                        protocol = payload["protocol"] if payload["protocol"] in ("tcp", "udp") else protocol
                        ports = [ALL_PORTS] if negated else [_nft_port(v) for v in values]
                    elif payload.get("field") == "saddr":
                        sources = [ANY] if negated else [_nft_address(v) for v in values]
                    elif meta_key == "l4proto" or (payload.get("field") in ("protocol", "nexthdr")):
                        if not negated and values and values[0] not in ("tcp", "udp"):
                            skip = True  # icmp and the like: no port to open
                        elif not negated and values:
                            protocol = values[0]
                else:
                    for name in ("accept", "drop", "reject", "jump", "goto", "return"):
                        if name in statement:
                            verdict = (name, statement[name])
            if skip or verdict is None:
                continue
            if verdict[0] == "accept":
                where = f"{rule['family']} {rule['table']} {rule['chain']} handle {rule['handle']}"
                result.allows.append(AllowRule(protocol, tuple(ports), tuple(sources), where))
            elif verdict[0] in ("jump", "goto"):
                walk((key[0], key[1], verdict[1]["target"]))

    for key, chain in chains.items():
        if chain.get("hook") == "input" and chain.get("type", "filter") == "filter":
            if chain.get("policy", "accept") == "accept":
                result.default_accept_chains.append(" ".join(key))
            walk(key)
    return result


# --- iptables-save -------------------------------------------------------------------------------------------


def parse_iptables_save(text: str) -> RuleSet:
    policies: dict[str, str] = {}
    rules: dict[str, list[list[str]]] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "filter" and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
        elif table == "filter" and line.startswith("-A "):
            tokens = shlex.split(line)
            rules.setdefault(tokens[1], []).append(tokens)
    if "INPUT" not in policies:
        raise CheckSourceError("The firewall command did not print an iptables-save filter table.")

    result = RuleSet([], ["filter INPUT"] if policies["INPUT"] == "ACCEPT" else [])
    visited: set[str] = set()

    def walk(chain: str) -> None:
        if chain in visited:
            return
        visited.add(chain)
        for tokens in rules.get(chain, []):
            options: dict[str, tuple[bool, str]] = {}
            negated = False
            for index, token in enumerate(tokens):
                if token == "!":
                    negated = True
                elif token.startswith("-") and index + 1 < len(tokens):
                    options[token] = (negated, tokens[index + 1])
                    negated = False
            target = (options.get("-j") or options.get("-g") or (False, ""))[1]
            state = options.get("--ctstate") or options.get("--state")
            interface = options.get("-i")
            if (state and "NEW" not in state[1].split(",")) or (interface and interface == (False, "lo")):
                continue
            protocol = options.get("-p", (False, ANY))
            if protocol[1] not in ("tcp", "udp", ANY, "all"):
                continue
            port_option = options.get("--dport") or options.get("--dports") or options.get("--destination-port")
            ports = (
                [ALL_PORTS]
                if port_option is None or port_option[0]
                else [port.replace(":", "-") for port in port_option[1].split(",")]
            )
            source = options.get("-s")
            sources = [ANY] if source is None or source[0] else [normalize_source(source[1])]
            if target == "ACCEPT":
                rule_protocol = ANY if protocol[0] or protocol[1] == "all" else protocol[1]
                result.allows.append(AllowRule(rule_protocol, tuple(ports), tuple(sources), " ".join(tokens)))
            elif target in rules:
                walk(target)

    walk("INPUT")
    return result


# --- the review ----------------------------------------------------------------------------------------------


def _port_covers(port: str, number: int) -> bool:
    if port == ALL_PORTS:
        return True
    if "-" in port:
        low, high = (int(part) for part in port.split("-"))
        return low <= number <= high
    return int(port) == number


def review_host_rules(rules: RuleSet, policy: Policy) -> list[Finding]:
    config = policy.security.firewall
    findings = []
    actual: dict[tuple[str, str, str], AllowRule] = {}
    critical_keys = set()
    for rule in rules.allows:
        for port in rule.ports:
            for source in rule.sources:
                actual.setdefault((rule.protocol, port, source), rule)
                if source != ANY or rule.protocol == "udp":
                    continue
                exposed = [
                    f"{number} ({name})"
                    for number, name in config.protected_ports.items()
                    if _port_covers(port, number)
                ]
                if exposed:
                    critical_keys.add((rule.protocol, port, source))
                    findings.append(
                        Finding(
                            CHECK,
                            "critical",
                            f"host any-source allow {rule.protocol}/{port}",
                            f"the host firewall accepts {rule.protocol}/{port} from any address, exposing "
                            f"{', '.join(exposed)}",
                            {"rule": rule.rule},
                        )
                    )
    baseline = {(entry.protocol, str(entry.port), normalize_source(entry.source)) for entry in config.baseline}
    for key, rule in sorted(actual.items()):
        if key not in baseline and key not in critical_keys:
            protocol, port, source = key
            findings.append(
                Finding(
                    CHECK,
                    "warning",
                    f"host unexpected allow {protocol}/{port} from {source}",
                    f"the host firewall accepts {protocol}/{port} from {source}, which the baseline does not list",
                    {"rule": rule.rule},
                )
            )
    for protocol, port, source in sorted(baseline - set(actual)):
        findings.append(
            Finding(
                CHECK,
                "warning",
                f"host missing baseline allow {protocol}/{port} from {source}",
                f"the baseline allows {protocol}/{port} from {source} but the host firewall has no such rule",
                {},
            )
        )
    for chain in rules.default_accept_chains:
        findings.append(
            Finding(
                CHECK,
                "warning",
                f"host default accept {chain}",
                f"the input chain {chain} accepts what no rule matched (default policy accept)",
                {},
            )
        )
    return findings


def review_network_policies(items: list, policy: Policy) -> list[Finding]:
    """Findings for the NetworkPolicies (kubernetes client models) of the workload's namespace."""
    config = policy.security.firewall
    namespace = policy.kubernetes.namespace
    findings = []
    names = {item.metadata.name for item in items}
    for missing in sorted(set(config.network_policies) - names):
        findings.append(
            Finding(
                CHECK,
                "warning",
                f"networkpolicy {namespace}/{missing} missing",
                f"the baseline NetworkPolicy {missing} does not exist in namespace {namespace}",
                {},
            )
        )
    for item in sorted(items, key=lambda i: i.metadata.name):
        name = item.metadata.name
        if name not in config.network_policies:
            findings.append(
                Finding(
                    CHECK,
                    "warning",
                    f"networkpolicy {namespace}/{name} unlisted",
                    f"NetworkPolicy {name} in namespace {namespace} is not in the baseline",
                    {},
                )
            )
        for rule in item.spec.ingress or []:
            peers = rule._from or []
            open_to_all = not peers or any(
                peer.ip_block is not None and normalize_source(peer.ip_block.cidr) == ANY for peer in peers
            )
            if not open_to_all:
                continue
            ports = [port.port for port in rule.ports or []] or [ALL_PORTS]
            for port in ports:
                exposed = [
                    f"{number} ({service})"
                    for number, service in config.protected_ports.items()
                    if (isinstance(port, int) and port == number) or port == ALL_PORTS
                ]
                if exposed:
                    findings.append(
                        Finding(
                            CHECK,
                            "critical",
                            f"networkpolicy {namespace}/{name} any-source {port}",
                            f"NetworkPolicy {name} in {namespace} admits every source to port {port}, exposing "
                            f"{', '.join(exposed)}",
                            {"pod_selector": item.spec.pod_selector.to_dict() if item.spec.pod_selector else {}},
                        )
                    )
    return findings


def firewall_rule_review(policy: Policy, as_of: datetime) -> list[Finding]:
    from kubernetes import client

    config = policy.security.firewall
    text = run_command(config.command, config.timeout, "the host firewall rules")
    rules = parse_nft(text) if config.format == "nft-json" else parse_iptables_save(text)
    network_policies = read_kubernetes(
        policy.kubernetes.conn_id,
        f"the NetworkPolicies of namespace {policy.kubernetes.namespace}",
        lambda api: client.NetworkingV1Api(api).list_namespaced_network_policy(policy.kubernetes.namespace).items,
    )
    return review_host_rules(rules, policy) + review_network_policies(network_policies, policy)
