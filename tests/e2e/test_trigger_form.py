"""The db_restore trigger form as a person sees it, in headless Chromium against the e2e Airflow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium")
# Without these, Chromium spends its start trying to reach Google's hosts, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (apt-get install chromium)")
def test_restore_trigger_form_has_its_sections_and_fields(airflow_standalone):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{airflow_standalone.url}/auth/login?next=%2Fdags%2Fdb_restore", wait_until="networkidle")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(airflow_standalone.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/dags/db_restore", timeout=60_000)
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Trigger Dag - db_restore").wait_for()
            expected = {
                "What to restore": ["Backup", "Target database"],
                "How": ["Restore mode", "Parallel pg_restore jobs", "Scale trading-api down and up"],
                "Safety": ["Dry run", "Confirm"],
            }
            for section, labels in expected.items():
                dialog.get_by_role("button", name=section).click()
                for label in labels:
                    dialog.get_by_text(label).first.wait_for(timeout=10_000)
                page.screenshot(
                    path=str(ARTIFACTS / f"db_restore-trigger-form-{section.lower().replace(' ', '-')}.png")
                )
            assert dialog.get_by_role("button", name="Trigger").is_enabled(), "the defaults must form a valid dry run"
        finally:
            browser.close()
