"""vulnerability_scan: pip-audit over the pinned requirement files and the running environment.

pip-audit runs as its command-line tool with `--strict` (a package it cannot audit is an error, not "No known
vulnerabilities found") against the OSV database named by the `osv_api` connection (`--osv-url`), so a local
mirror or a test double can stand in for api.osv.dev. Its JSON report becomes one finding per package and
advisory; a run that produced no report (service unreachable, a package skipped) raises.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime

from trading_ops.http_connections import http_session
from trading_ops.policy import Policy
from trading_ops.security.findings import CheckSourceError, Finding
from trading_ops.security.sources import project_file

CHECK = "vulnerability_scan"


def osv_endpoint(conn_id: str):
    """(requests session, URL of OSV's /v1/query) for the vulnerability database connection."""
    session, base_url = http_session(conn_id)
    return session, f"{base_url}/v1/query"


def pip_audit(source_args: list[str], osv_url: str, timeout_seconds: float, what: str) -> list[dict]:
    """The `dependencies` of pip-audit's JSON report for one source (`-r FILE ...` or the environment)."""
    with tempfile.TemporaryDirectory(prefix="pip-audit-cache-") as cache_dir:
        argv = [
            sys.executable,
            "-m",
            "pip_audit",
            "--strict",
            "--vulnerability-service",
            "osv",
            "--osv-url",
            osv_url,
            "--format",
            "json",
            "--progress-spinner",
            "off",
            "--cache-dir",
            cache_dir,
            *source_args,
        ]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            raise CheckSourceError(f"pip-audit of {what} did not finish in {timeout_seconds:.0f} s.") from None
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckSourceError(
            f"pip-audit could not audit {what} (exit {result.returncode}): {last_line[-400:]}"
        ) from None
    return report["dependencies"]


def vulnerability_scan(policy: Policy, as_of: datetime) -> list[Finding]:
    config = policy.security.vulnerability_scan
    _, osv_url = osv_endpoint(config.osv_conn_id)
    sources: list[tuple[str, list[str]]] = []
    for name in policy.security.requirement_files:
        path = project_file(name)
        if not path.is_file():
            raise CheckSourceError(f"Cannot audit {name}: {path} does not exist.")
        # Pinned files need no resolver: auditing exactly what is written, without pip or an index.
        sources.append((name, ["--requirement", str(path), "--no-deps", "--disable-pip"]))
    if config.audit_environment:
        sources.append(("environment", []))

    found: dict[str, dict] = {}
    for source, args in sources:
        for dependency in pip_audit(args, osv_url, config.timeout.total_seconds(), source):
            for vuln in dependency["vulns"]:
                subject = f"{dependency['name']} {vuln['id']}"
                entry = found.setdefault(subject, {"package": dependency["name"], "vuln": vuln, "found_in": []})
                entry["found_in"].append({"source": source, "version": dependency["version"]})

    findings = []
    for subject, entry in found.items():
        vuln = entry["vuln"]
        fixes = vuln.get("fix_versions") or []
        versions = sorted({place["version"] for place in entry["found_in"]})
        remedy = f"fixed in {', '.join(fixes)}" if fixes else "no fixed release yet"
        findings.append(
            Finding(
                check=CHECK,
                severity=config.severity_with_fix if fixes else config.severity_without_fix,
                subject=subject,
                message=(
                    f"{entry['package']} {', '.join(versions)} is affected by {vuln['id']}"
                    f" ({(vuln.get('description') or 'no description')[:200]}); {remedy}"
                ),
                evidence={
                    "package": entry["package"],
                    "id": vuln["id"],
                    "aliases": vuln.get("aliases", []),
                    "fix_versions": fixes,
                    "found_in": entry["found_in"],
                },
            )
        )
    return findings


def osv_advisory_ids(session, query_url: str, package: str, version: str, timeout: float) -> list[str]:
    """Ids of the OSV advisories affecting one PyPI package version (OSV's /v1/query wire format)."""
    import requests

    try:
        response = session.post(
            query_url,
            json={"package": {"name": package, "ecosystem": "PyPI"}, "version": version},
            timeout=timeout,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        raise CheckSourceError(f"Cannot query the vulnerability database at {query_url}: {exc}") from None
    return [vuln["id"] for vuln in response.json().get("vulns", [])]
