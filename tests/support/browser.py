"""Headless Chromium (Debian's package) against the e2e Airflow: its launch arguments, where screenshots go, and
the login form a person fills in."""

from __future__ import annotations

import shutil
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

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


@contextmanager
def signed_in_page(airflow, next_path: str, *, width: int = 1400, height: int = 1100) -> Generator:
    """A Chromium page logged in to `airflow` as the admin, on `next_path`; screenshots go to ARTIFACTS."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            sign_in(page, airflow, next_path)
            yield page
        finally:
            browser.close()


def sign_in(page, airflow, next_path: str, user: str = "admin") -> None:
    """Log in through Airflow's login page as `user` and wait until it lands on `next_path`."""
    page.goto(f"{airflow.url}/auth/login?next={quote(next_path, safe='')}", wait_until="networkidle")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(airflow.passwords()[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_path}", timeout=60_000)
