"""The Ops page on the real Airflow (`airflow standalone`): the plugin's routes refuse requests without a login,
and after a login the page renders in headless Chromium, inside the UI's frame and on its own, with the numbers
of `backups window` and `backups list`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.support.browser import ARTIFACTS, CHROMIUM, signed_in_page
from tests.support.harness import ROOT

pytestmark = pytest.mark.e2e


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _cli(airflow_standalone, *args: str) -> str:
    """The CLI as an operator runs it beside this Airflow: its policy, its trading_db and ops state."""
    env = {key: value for key, value in airflow_standalone.env().items() if not key.startswith("AIRFLOW__")}
    result = subprocess.run(
        [sys.executable, "-m", "trading_ops", *args],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT / "plugins")},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def with_a_full_backup(airflow_standalone):
    """A full backup in the e2e repository, by db_backup_full (test_airflow_e2e's run when it ran first)."""
    if not json.loads(_cli(airflow_standalone, "backups", "list", "--type", "full", "--json")):
        run_id = airflow_standalone.trigger("db_backup_full", {"dry_run": False})
        assert airflow_standalone.wait_for_run("db_backup_full", run_id, timeout=600)["state"] == "success"
    return airflow_standalone


def test_the_plugin_routes_refuse_requests_without_a_login(airflow_standalone):
    base = airflow_standalone.url + "/trading-ops"
    for path in ("/", "/api/sections", "/api/sections/recoverability"):
        assert _status(base + path) == 401, path
        assert _status(base + path, {"Authorization": "Bearer forged.token.value"}) == 403, path
        assert _status(base + path, {"Cookie": "_token=forged"}) == 403, path
    token = airflow_standalone.token()
    assert _status(base + "/api/sections", {"Authorization": f"Bearer {token}"}) == 200


def test_the_page_shows_the_numbers_of_backups_window_and_list(with_a_full_backup):
    airflow = with_a_full_backup
    data = airflow.request("GET", "/trading-ops/api/sections/recoverability")
    assert data["window"]["sentence"] == _cli(airflow, "backups", "window").strip()
    listed = json.loads(_cli(airflow, "backups", "list", "--json"))
    keys = ("id", "type", "time", "size", "verified", "pinned")
    assert [{k: row[k] for k in keys} for row in data["catalog"]] == [{k: row[k] for k in keys} for row in listed]
    assert data["window"]["start"] is not None and data["catalog"], "db_backup_full left a full backup"
    assert [(row["id"], (row["last_drill"] or {}).get("outcome")) for row in data["catalog"]] == [
        (row["id"], (row["last_drill"] or {}).get("outcome")) for row in listed
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (apt-get install chromium)")
def test_the_page_renders_after_a_login_in_the_ui_and_on_its_own(with_a_full_backup):
    airflow = with_a_full_backup
    data = airflow.request("GET", "/trading-ops/api/sections/recoverability")
    with signed_in_page(airflow, "/plugin/trading-ops", height=1000) as page:
        # The navigation's own entry, and the page in the UI's frame with the login's cookie.
        page.get_by_role("link", name="Trading ops").first.wait_for(timeout=30_000)
        frame = page.frame_locator("iframe").first
        frame.locator("#recoverability h2").wait_for(timeout=60_000)
        assert frame.locator("#window-start").get_attribute("datetime") == data["window"]["start"]
        page.screenshot(path=str(ARTIFACTS / "ops-page-in-airflow-ui.png"))

        page.goto(f"{airflow.url}/trading-ops/", wait_until="networkidle")
        for title in ("Recoverability", "Alerts", "Incidents", "Security", "Logs and capacity"):
            page.get_by_role("heading", name=title, exact=True).wait_for(timeout=10_000)
        # The window ends at the newest archived segment, and the cluster archives one a minute (archive_timeout):
        # the page shows the end the JSON gave just before it or the one it gives just after.
        after = airflow.request("GET", "/trading-ops/api/sections/recoverability")["window"]["end"]
        assert page.locator("#window-end").get_attribute("datetime") in {data["window"]["end"], after}
        rows = page.locator("#catalog tr[data-backup]")
        assert [rows.nth(i).get_attribute("data-backup") for i in range(rows.count())] == [
            row["id"] for row in data["catalog"]
        ]
        assert page.locator("#rto-trend").count() == 1
        page.screenshot(path=str(ARTIFACTS / "ops-page.png"), full_page=True)
    assert os.path.getsize(ARTIFACTS / "ops-page.png") > 10_000
