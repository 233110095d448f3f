"""A real headless Chromium for the browser tests (the ``chrome`` fixture, which conftest imports)
and their screenshots, kept in ``${TMPDIR:-/tmp}/epochauth-artifacts/`` (.ci/run: collect them as CI
artifacts).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (.ci/run installs them): skipped
locally without them, failed when CI=true.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(tempfile.gettempdir()) / "epochauth-artifacts"


def _check_chromium() -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise FileNotFoundError(path)
    import selenium  # noqa: F401


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through the system chromedriver (Selenium Manager never downloads anything)."""
    # conftest makes this fixture available by importing this module.
    from tests.conftest import service_required

    service_required(
        "Chromium and chromedriver (Debian packages chromium, chromium-driver)", _check_chromium
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """Save the page as ``ARTIFACTS/name`` (``name`` may hold a subdirectory)."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
