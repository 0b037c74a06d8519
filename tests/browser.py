"""A real browser against a real Ooda: Debian's chromium driven by Selenium through chromedriver.

Selenium's calls block, so Ooda runs on an event loop of its own in a thread (``LiveOoda``)
while the test drives the browser from the main thread. The browser is headless, sandboxless
(the tests may run as root) and offline: the chromedriver is the system's, given to Selenium
explicitly, so Selenium Manager never looks for or downloads one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from bot.app import App
from tests.harness import running_app, running_standin

T = TypeVar("T")
WAIT_S = 60  # generous: a loaded 2-core machine runs Ooda, chromium and other tests at once


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not installed; run `apt-get install chromium chromium-driver` (Debian packages)")


@contextmanager
def chrome(*, javascript: bool = True, width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=_binary("chromedriver"))
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not reach the network, whatever happens
    try:
        driver = webdriver.Chrome(service=service, options=options)
    finally:
        if offline is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = offline
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = WAIT_S) -> Any:
    """``condition`` until it returns something true. Live pages replace their parts every few
    seconds, so an element found a moment ago may be gone: that is retried, not a failure."""
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)


def visible(driver: WebDriver, css: str) -> Any:
    return wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def text_of(driver: WebDriver, css: str) -> str:
    """The text of the element at ``css`` now (read again if the page replaced it meanwhile)."""
    return str(wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).text or " ")).strip()


def attribute_of(driver: WebDriver, css: str, name: str) -> str:
    return str(wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).get_attribute(name)))


def sign_in(driver: WebDriver, base_url: str, token: str) -> None:
    driver.get(f"{base_url}/ui/inbox")
    visible(driver, "#token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    visible(driver, "#who")


def screenshot(driver: WebDriver, name: str) -> None:
    """Saved to ``$OODA_SCREENSHOTS/<name>.png`` when that is set (the README's pictures)."""
    folder = os.environ.get("OODA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 40, 4000))  # the whole page, not the first screen
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(size["width"], size["height"])


class LiveOoda:
    """The stand-in and an App on an event loop in a thread of their own, for as long as the block."""

    def __init__(self, tmp_path: Path, overrides: dict[str, Any] | None = None) -> None:
        self._tmp_path = tmp_path
        self._overrides = overrides
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.app: App | None = None
        self._thread = threading.Thread(target=self._run, name="ooda", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_standin() as standin, running_app(self._tmp_path, standin, self._overrides) as app:
                self.app = app
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> LiveOoda:
        self._thread.start()
        if not self._ready.wait(WAIT_S) or self._error is not None:
            raise RuntimeError(f"Ooda did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT_S)
        self._loop.close()

    @property
    def base_url(self) -> str:
        assert self.app is not None
        return f"http://127.0.0.1:{self.app.port}"

    def run(self, make: Callable[[App], Awaitable[T]]) -> T:
        """Run ``make(app)`` on Ooda's loop and return its result."""
        assert self.app is not None
        app = self.app

        async def call() -> T:
            return await make(app)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(WAIT_S)
