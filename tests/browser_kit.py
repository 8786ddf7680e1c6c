"""A real headless Chromium for tests, driven over the W3C WebDriver protocol that Debian's
chromedriver speaks (plain JSON over HTTP: no driver library needed)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from farm_kit import stop_process

# How WebDriver names an element in its answers.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Browser:
    """One Chromium session; every call waits for the browser's answer."""

    def __init__(self, driver_url: str, session: str) -> None:
        self._base = f"{driver_url}/session/{session}"

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.loads(reply.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def run(self, script: str) -> Any:
        """The value of a function body run in the page (WebDriver's, not the page's CSP)."""
        return self._call("POST", "/execute/sync", {"script": script, "args": []})

    def text(self) -> str:
        return str(self.run("return document.body ? document.body.innerText : '';"))

    def _element(self, css: str) -> str:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        if ELEMENT not in found:
            raise AssertionError(f"no element {css}: {found}\n{self.text()}")
        return str(found[ELEMENT])

    def type_into(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self._element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self._element(css)}/click", {})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def wait_for(self, until: Callable[[str], bool], what: str, timeout: float = 120) -> str:
        """Poll the page's text until until(text) holds; fails with the last text."""
        give_up = time.monotonic() + timeout
        while True:
            text = self.text()
            if until(text):
                return text
            if time.monotonic() > give_up:
                raise AssertionError(f"the page never showed {what}:\n{text}")
            time.sleep(0.05)


@contextlib.contextmanager
def chromium(chromium: str, driver: str, workdir: Path) -> Iterator[Browser]:
    """A chromedriver on a free port with one headless session; both end afterwards.
    The session accepts the farm's self-signed CA (the TLS itself is tested elsewhere)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "chromedriver.log", "w")  # noqa: SIM115 - lives as long as it runs
    proc = subprocess.Popen(
        [driver, "--port=0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "HOME": str(workdir)},
    )
    try:
        assert proc.stdout is not None
        port = ""
        for line in proc.stdout:
            found = re.search(r"started successfully on port (\d+)", line)
            if found:
                port = found.group(1)
                break
        if not port:
            raise RuntimeError(
                f"chromedriver did not start: {(workdir / 'chromedriver.log').read_text()}"
            )
        url = f"http://127.0.0.1:{port}"
        options = {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1280,800",
                f"--user-data-dir={workdir / 'profile'}",
            ],
        }
        capabilities = {
            "browserName": "chrome",
            "acceptInsecureCerts": True,
            "goog:chromeOptions": options,
        }
        request = urllib.request.Request(
            f"{url}/session",
            data=json.dumps({"capabilities": {"alwaysMatch": capabilities}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            session = json.loads(reply.read())["value"]["sessionId"]
        browser = Browser(url, session)
        try:
            yield browser
        finally:
            with contextlib.suppress(OSError):
                browser._call("DELETE", "")
    finally:
        stop_process(proc)
        log.close()
