"""dependency_updates: the pinned requirements against the newest release on the package index.

The index is the `package_index` connection's PyPI JSON API (`GET /pypi/<name>/json`); the newest release is the
highest version that is neither a pre-release nor yanked. An outdated package is info, raised to warning when
the pinned version has advisories in the OSV database (the `osv_api` connection). A package the index does not
know is a warning (a private or mistyped name is how dependency-confusion attacks start); an index that cannot be
reached fails the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from trading_ops.http_connections import http_session
from trading_ops.policy import Policy
from trading_ops.security.findings import CheckSourceError, Finding
from trading_ops.security.sources import project_file
from trading_ops.security.vulnerabilities import osv_advisory_ids, osv_endpoint

CHECK = "dependency_updates"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    file: str


def read_pins(files: list[str]) -> tuple[list[Pin], list[Finding]]:
    """The `name==version` pins of the requirement files, and a finding for every requirement that is not one."""
    pins: dict[str, Pin] = {}
    unpinned = []
    for name in files:
        path = project_file(name)
        if not path.is_file():
            raise CheckSourceError(f"Cannot check {name}: {path} does not exist.")
        for line in path.read_text().splitlines():
            text = re.sub(r"(^|\s)#.*$", "", line).strip()
            if not text or text.startswith("-"):
                continue
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                raise CheckSourceError(f"Cannot check {name}: {text!r} is not a requirement.") from None
            specifiers = list(requirement.specifier)
            if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
                key = canonicalize_name(requirement.name)
                pins.setdefault(key, Pin(key, specifiers[0].version, name))
            else:
                unpinned.append(
                    Finding(
                        check=CHECK,
                        severity="warning",
                        subject=canonicalize_name(requirement.name),
                        message=f"{requirement} in {name} is not pinned to one version",
                        evidence={"file": name, "requirement": text},
                    )
                )
    return list(pins.values()), unpinned


def newest_release(project: dict) -> Version | None:
    candidates = []
    for text, files in project.get("releases", {}).items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not version.is_prerelease and files and not all(file.get("yanked") for file in files):
            candidates.append(version)
    return max(candidates, default=None)


def dependency_updates(policy: Policy, as_of: datetime) -> list[Finding]:
    import requests

    config = policy.security.dependency_updates
    timeout = config.timeout.total_seconds()
    pins, findings = read_pins(policy.security.requirement_files)
    index, index_url = http_session(config.package_index_conn_id)
    osv_session, osv_url = osv_endpoint(policy.security.vulnerability_scan.osv_conn_id)
    for pin in pins:
        url = f"{index_url}/pypi/{pin.name}/json"
        try:
            response = index.get(url, timeout=timeout)
        except requests.RequestException as exc:
            raise CheckSourceError(f"Cannot reach the package index at {index_url}: {exc}") from None
        if response.status_code == 404:
            findings.append(
                Finding(
                    check=CHECK,
                    severity="warning",
                    subject=pin.name,
                    message=f"{pin.name} (pinned {pin.version} in {pin.file}) is not on the package index {index_url}",
                    evidence={"pinned": pin.version, "file": pin.file, "index": index_url},
                )
            )
            continue
        if response.status_code != 200:
            raise CheckSourceError(f"The package index answered {response.status_code} for {url}.")
        latest = newest_release(response.json())
        if latest is None or latest <= Version(pin.version):
            continue
        advisories = osv_advisory_ids(osv_session, osv_url, pin.name, pin.version, timeout)
        findings.append(
            Finding(
                check=CHECK,
                severity="warning" if advisories else "info",
                subject=pin.name,
                message=f"{pin.name} is pinned at {pin.version} in {pin.file}; the newest release is {latest}"
                + (f"; the pinned version has advisories {', '.join(advisories)}" if advisories else ""),
                evidence={"pinned": pin.version, "latest": str(latest), "file": pin.file, "advisories": advisories},
            )
        )
    return findings
