"""Airflow's plugin manager leaves the trading_ops package alone (plugins/.airflowignore): it would import every
file under its bare name, so the two tasks.py, catalog.py and access.py clash, and a __main__.py replaces the
running program's."""

from __future__ import annotations

import shutil

import pytest

from tests.support.plugin_scan import ROOT, load_plugins

PLUGINS = ROOT / "plugins"


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_the_plugin_scan_finds_no_file_of_the_package(syntax):
    from airflow._shared.module_loading import find_path_from_directory

    files = list(find_path_from_directory(str(PLUGINS), ".airflowignore", syntax))
    assert not any(path.endswith("trading_ops/backup/full.py") for path in files)
    assert [path for path in files if "/trading_ops/" in path] == []


def test_after_the_plugin_manager_ran_no_bare_module_of_the_package_is_loaded():
    """Only the real plugin beside the package loads (plugins/ops_page.py, the Ops page), without an error."""
    bare, errors = load_plugins(PLUGINS)
    assert bare == {"ops_page": str(PLUGINS / "ops_page.py")} and errors == {}


def test_the_plugin_manager_finds_the_ops_page_and_its_navigation_entry():
    from airflow import plugins_manager

    plugins_manager.ensure_plugins_loaded()
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [(app["name"], app["url_prefix"]) for app in apps] == [("Trading ops", "/trading-ops")]
    [info] = plugins_manager.get_plugin_info(["external_views"])
    assert info["external_views"] == [
        {
            "name": "Trading ops",
            "href": "/trading-ops/",
            "destination": "nav",
            "url_route": "trading-ops",
            "nav_top_level": True,
        }
    ]


def test_without_the_ignore_rule_the_package_would_load_as_bare_clashing_modules(tmp_path):
    """The probe above sees what it looks for: with only the old rule (no __main__.py), `tasks`, `catalog` and
    `access` load as top-level modules, one file each of the two that share the name."""
    shutil.copytree(PLUGINS, tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "plugins" / ".airflowignore").write_text("__main__.py\n")
    bare, _ = load_plugins(tmp_path / "plugins")
    assert {"tasks", "catalog", "access"} <= set(bare)
    assert bare["tasks"].endswith(("backup/tasks.py", "security/tasks.py"))
