"""A package index and vulnerability database on 127.0.0.1: the PyPI JSON API and the OSV API.

- `GET /pypi/<name>/json`: PyPI's project JSON (`info.version`, `releases` with per-file `yanked`), 404 for an
  unknown project, names normalised as PyPI does (PEP 503).
- `POST /v1/query` `{"package": {"name", "ecosystem": "PyPI"}, "version"}`: OSV's answer, `{"vulns": [...]}` with
  the advisories whose `affected` ranges (ECOSYSTEM events introduced/fixed) or `versions` hold that version, or
  `{}` when none do, exactly as api.osv.dev answers.

pip-audit reaches it with `--vulnerability-service osv --osv-url <url>/v1/query`; the checks reach it through the
`osv_api` and `package_index` Airflow connections (`connection_json()`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.fakes.http_server import RecordingHttpServer


class PackageIndexFake(RecordingHttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.releases: dict[str, list[str]] = {}
        self.yanked: set[tuple[str, str]] = set()
        self.advisories: list[dict] = []
        self.route("GET", r"/pypi/(?P<name>[^/]+)/json")(self._project)
        self.route("POST", r"/v1/query")(self._osv_query)

    def add_package(self, name: str, versions: list[str], yanked: tuple[str, ...] = ()) -> None:
        key = canonicalize_name(name)
        self.releases[key] = list(versions)
        self.yanked |= {(key, version) for version in yanked}

    def add_packages_from_requirements(self, path: Path) -> None:
        """Every `name==version` pin of a requirements file, as the newest release of its project."""
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
            if match:
                self.add_package(match[1], [match[2]])

    def add_advisory(
        self,
        advisory_id: str,
        package: str,
        *,
        introduced: str = "0",
        fixed: str | None = None,
        aliases: tuple[str, ...] = (),
        summary: str = "",
    ) -> None:
        events = [{"introduced": introduced}] + ([{"fixed": fixed}] if fixed else [])
        self.advisories.append(
            {
                "schema_version": "1.6.0",
                "id": advisory_id,
                "modified": "2026-10-01T00:00:00Z",
                "published": "2026-09-15T00:00:00Z",
                "aliases": list(aliases),
                "summary": summary,
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": canonicalize_name(package)},
                        "ranges": [{"type": "ECOSYSTEM", "events": events}],
                    }
                ],
            }
        )

    def connection_json(self) -> str:
        return json.dumps({"conn_type": "http", "host": self.url})

    def osv_queries(self) -> list[tuple[str, str]]:
        return [
            (r.json()["package"]["name"], r.json()["version"])
            for r in self.requests
            if r.method == "POST" and r.path == "/v1/query"
        ]

    def _project(self, request):
        name = canonicalize_name(request.params["name"])
        if name not in self.releases:
            return 404, {"message": "Not Found"}
        versions = self.releases[name]
        stable = [v for v in versions if not Version(v).is_prerelease and (name, v) not in self.yanked]
        releases = {
            version: [
                {
                    "filename": f"{name.replace('-', '_')}-{version}-py3-none-any.whl",
                    "packagetype": "bdist_wheel",
                    "yanked": (name, version) in self.yanked,
                    "yanked_reason": "broken" if (name, version) in self.yanked else None,
                }
            ]
            for version in versions
        }
        info = {"name": name, "version": max(stable, key=Version) if stable else versions[-1], "yanked": False}
        return 200, {"info": info, "releases": releases, "urls": releases[info["version"]], "vulnerabilities": []}

    def _osv_query(self, request):
        query = request.json()
        name = canonicalize_name(query["package"]["name"])
        version = Version(query["version"])
        vulns = [
            advisory
            for advisory in self.advisories
            if any(
                affected["package"]["name"] == name and _affects(affected, version) for affected in advisory["affected"]
            )
        ]
        return 200, ({"vulns": vulns} if vulns else {})


def _affects(affected: dict, version: Version) -> bool:
    if str(version) in affected.get("versions", []):
        return True
    for version_range in affected.get("ranges", []):
        introduced = fixed = None
        for event in version_range["events"]:
            introduced = Version(event["introduced"]) if "introduced" in event else introduced
            fixed = Version(event["fixed"]) if "fixed" in event else fixed
        if introduced is not None and introduced <= version and (fixed is None or version < fixed):
            return True
    return False
