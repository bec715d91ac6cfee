"""The db_restore trigger form as a person sees it, in headless Chromium against the e2e Airflow."""

from __future__ import annotations

import re

import pytest

from tests.support.browser import ARTIFACTS, CHROMIUM, signed_in_page

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (apt-get install chromium)")
def test_restore_trigger_form_has_its_sections_and_fields(airflow_standalone):
    with signed_in_page(airflow_standalone, "/dags/db_restore") as page:
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Trigger Dag - db_restore").wait_for()
        expected = {
            "What to restore": ["Backup", "Recover to", "Target time", "Target database"],
            "How": [
                "Restore mode",
                "Parallel pg_restore jobs",
                "Scale trading-api down and up",
                "Replicas after the restore",
            ],
            "Safety": ["Dry run", "Confirm"],
        }
        for section, labels in expected.items():
            dialog.get_by_role("button", name=section).click()
            for label in labels:
                # Anchored: a description elsewhere in the form may mention a label ("... a dry run shows it").
                dialog.get_by_text(re.compile("^" + re.escape(label))).first.wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / f"db_restore-trigger-form-{section.lower().replace(' ', '-')}.png"))
        assert dialog.get_by_role("button", name="Trigger").is_enabled(), "the defaults must form a valid dry run"
