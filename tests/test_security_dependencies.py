"""vulnerability_scan (the real pip-audit CLI) and dependency_updates against a package index and OSV on 127.0.0.1."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.fakes.package_index import PackageIndexFake
from trading_ops.dev.localpg import free_port
from trading_ops.security.dependencies import dependency_updates
from trading_ops.security.findings import CheckSourceError
from trading_ops.security.vulnerabilities import vulnerability_scan

AS_OF = datetime(2026, 11, 2, tzinfo=UTC)
REQUIREMENTS = """\
# a lock like the project's
Jinja2==3.1.4
requests==2.34.2
examplelib==1.0 ; python_version >= "3.8"
PyYAML==6.0.4
"""


@pytest.fixture
def index(monkeypatch):
    with PackageIndexFake() as fake:
        monkeypatch.setenv("AIRFLOW_CONN_OSV_API", fake.connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_PACKAGE_INDEX", fake.connection_json())
        fake.add_advisory(
            "GHSA-q2x7-8rv6-6q7h",
            "jinja2",
            fixed="3.1.5",
            aliases=("CVE-2024-56201",),
            summary="Jinja has a sandbox breakout through malicious filenames",
        )
        fake.add_advisory("PYSEC-2026-999", "examplelib", summary="examplelib evaluates untrusted templates")
        yield fake


@pytest.fixture
def requirements(tmp_path, make_policy):
    path = tmp_path / "requirements.txt"
    path.write_text(REQUIREMENTS)

    def _policy(text: str = REQUIREMENTS, **changes):
        path.write_text(text)
        make_policy(
            {
                "security.requirement_files": [str(path)],
                "security.vulnerability_scan.audit_environment": False,
                **changes,
            }
        )
        return path

    return _policy


def test_vulnerability_scan_reports_each_advisory_with_severity_by_fix(index, requirements):
    requirements()
    findings = {f.subject: f for f in vulnerability_scan(_policy(), AS_OF)}
    assert set(findings) == {"jinja2 CVE-2024-56201", "examplelib PYSEC-2026-999"}
    jinja = findings["jinja2 CVE-2024-56201"]
    assert jinja.severity == "critical", "a fixed release exists: upgrade now"
    assert "fixed in 3.1.5" in jinja.message and jinja.evidence["aliases"] == ["GHSA-q2x7-8rv6-6q7h"]
    assert jinja.evidence["found_in"][0]["version"] == "3.1.4"
    assert findings["examplelib PYSEC-2026-999"].severity == "warning"
    assert "no fixed release yet" in findings["examplelib PYSEC-2026-999"].message
    # pip-audit asked the fake about exactly the pinned versions.
    assert sorted(index.osv_queries()) == [
        ("examplelib", "1.0"),
        ("jinja2", "3.1.4"),
        ("pyyaml", "6.0.4"),
        ("requests", "2.34.2"),
    ]


def test_vulnerability_scan_audits_the_running_environment(index, requirements):
    requirements("requests==2.34.2\n", **{"security.vulnerability_scan.audit_environment": True})
    installed = version("PyYAML")
    index.add_advisory("GHSA-yaml-0000-0000", "pyyaml", fixed="99.0", summary="unsafe load")
    findings = {f.subject: f for f in vulnerability_scan(_policy(), AS_OF)}
    assert findings["pyyaml GHSA-yaml-0000-0000"].evidence["found_in"] == [
        {"source": "environment", "version": installed}
    ]
    queried = {name for name, _ in index.osv_queries()}
    assert {"apache-airflow-core", "psycopg", "pip-audit"} <= queried, "the whole environment was audited"


def test_an_unreachable_vulnerability_database_fails_the_scan(index, requirements, monkeypatch):
    requirements()
    monkeypatch.setenv("AIRFLOW_CONN_OSV_API", f'{{"conn_type": "http", "host": "http://127.0.0.1:{free_port()}"}}')
    with pytest.raises(
        CheckSourceError, match=r"^pip-audit could not audit .*requirements.txt \(exit 1\): .*Connection"
    ):
        vulnerability_scan(_policy(), AS_OF)


def test_a_failing_vulnerability_database_fails_the_scan_instead_of_passing_it(index, requirements):
    requirements()
    index.fail_with = 503
    with pytest.raises(CheckSourceError, match=r"pip-audit could not audit"):
        vulnerability_scan(_policy(), AS_OF)
    assert index.osv_queries(), "the fake was asked and refused"


def test_a_missing_requirement_file_fails_the_scan(index, make_policy, tmp_path):
    make_policy({"security.requirement_files": [str(tmp_path / "absent.txt")]})
    with pytest.raises(CheckSourceError, match=r"absent.txt does not exist"):
        vulnerability_scan(_policy(), AS_OF)


def test_dependency_updates_compares_pins_with_the_newest_stable_release(index, requirements):
    requirements(
        REQUIREMENTS + "internal-risk-engine==0.3.1\nclick>=8\n",
    )
    index.add_package("jinja2", ["3.1.4", "3.1.5", "3.1.6", "4.0.0rc1"])
    index.add_package("requests", ["2.33.0", "2.34.2", "2.35.0"])
    index.add_package("pyyaml", ["6.0.3", "6.0.4", "6.0.5"], yanked=("6.0.5",))
    index.add_package("examplelib", ["1.0", "1.2"])
    findings = {f.subject: f for f in dependency_updates(_policy(), AS_OF)}

    assert set(findings) == {"jinja2", "requests", "examplelib", "internal-risk-engine", "click"}
    assert findings["jinja2"].severity == "warning", "outdated with an advisory on the pinned version"
    assert findings["jinja2"].evidence == {
        "pinned": "3.1.4",
        "latest": "3.1.6",
        "file": findings["jinja2"].evidence["file"],
        "advisories": ["GHSA-q2x7-8rv6-6q7h"],
    }
    assert findings["requests"].severity == "info", "outdated, no advisory"
    assert findings["requests"].message.endswith(
        "is pinned at 2.34.2 in " + findings["requests"].evidence["file"] + "; the newest release is 2.35.0"
    )
    assert (findings["examplelib"].severity, findings["examplelib"].evidence["latest"]) == ("warning", "1.2")
    assert findings["internal-risk-engine"].severity == "warning"
    assert "is not on the package index" in findings["internal-risk-engine"].message
    assert findings["click"].severity == "warning" and "not pinned" in findings["click"].message
    # Advisories were looked up only for the outdated pins.
    assert sorted(index.osv_queries()) == [("examplelib", "1.0"), ("jinja2", "3.1.4"), ("requests", "2.34.2")]
    assert "/pypi/pyyaml/json" in index.paths("GET"), "PyYAML is up to date: its yanked 6.0.5 does not count"


def test_an_unreachable_package_index_fails_dependency_updates(index, requirements, monkeypatch):
    requirements()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKAGE_INDEX", f'{{"conn_type": "http", "host": "http://127.0.0.1:{free_port()}"}}'
    )
    with pytest.raises(CheckSourceError, match=r"^Cannot reach the package index at http://127.0.0.1:\d+"):
        dependency_updates(_policy(), AS_OF)


def test_an_index_error_fails_dependency_updates(index, requirements):
    requirements()
    index.fail_with = 500
    with pytest.raises(CheckSourceError, match=r"^The package index answered 500 for .*/pypi/jinja2/json\.$"):
        dependency_updates(_policy(), AS_OF)


def _policy():
    from trading_ops.policy import load_policy

    return load_policy()


# The apache-airflow distribution installs Airflow as these two.
_PART_OF = {"apache-airflow-core": "apache-airflow", "apache-airflow-task-sdk": "apache-airflow"}


def _distribution_of(module: str, packages: dict[str, list[str]]) -> str | None:
    """The installed distribution whose files hold `module` (`packages`: importlib's packages_distributions());
    None for the standard library and the project."""
    import importlib.util
    import sys
    from importlib.metadata import distribution

    from packaging.utils import canonicalize_name

    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "trading_ops":
        return None
    origin = Path(importlib.util.find_spec(module).origin).resolve()
    for name in packages[top]:
        dist = distribution(name)
        base = Path(dist.locate_file("")).resolve()
        if origin.is_relative_to(base) and origin.relative_to(base).as_posix() in {str(f) for f in dist.files or []}:
            return _PART_OF.get(canonicalize_name(name), canonicalize_name(name))
    raise AssertionError(f"{module} is imported but belongs to no installed distribution")


def test_every_library_the_checks_import_is_named_in_requirements_in():
    """The lock is regenerated from requirements.in: a library imported directly must be asked for there."""
    import ast
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = Path(__file__).resolve().parents[1]
    named = {
        canonicalize_name(Requirement(line).name)
        for line in (root / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    imported = set()
    for source in (root / "plugins" / "trading_ops" / "security").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                imported.add(node.module)
    packages = packages_distributions()
    distributions = {module: _distribution_of(module, packages) for module in sorted(imported)}
    missing = {module: dist for module, dist in distributions.items() if dist and dist not in named}
    assert missing == {}
