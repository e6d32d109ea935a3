"""A real dashboard for tests and the demo: ``ecoin-dashboard serve`` in its own process,
and a headless Chromium to look at it.

    dash = DashboardProcess(tmp_path / "dash", pki_dir, bank.url, users={"olive": "owner"}).start()
    dash.url, dash.passwords["olive"]          # where it is, and the generated password
    with Browser() as b:                        # Debian's chromium through chromedriver
        b.login(dash.url, "olive", dash.passwords["olive"])

It issues the dashboard's certificate (role ``dashboard``) in the PKI if missing, writes its
``dashboard.toml``, adds the users with random passwords, and waits until it answers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

from ecoin.testing.servers import free_port, stop, wait_for_port
from ecoin.tools import pki

CHROMIUM = os.environ.get("ECOIN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ECOIN_CHROMEDRIVER", "/usr/bin/chromedriver")


class DashboardProcess:
    def __init__(
        self,
        workdir: Path,
        pki_dir: Path,
        bank_url: str,
        users: dict[str, str],
        health: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = self.workdir / "dashboard.toml"
        self.log = self.workdir / "dashboard.log"
        if not (Path(pki_dir) / "dashboard" / "dashboard.crt").exists():
            pki.issue(pki_dir, "dashboard", "dashboard")
        table = {
            "listen": "127.0.0.1",
            "port": self.port,
            "bank": bank_url,
            "pki": str(pki_dir),
            "refresh_s": 1.0,
            "health": health or {},
            **settings,
        }
        self.config.write_text(tomli_w.dumps({"dashboard": table}))
        self.passwords = {name: secrets.token_urlsafe(12) for name in users}
        for name, role in users.items():
            self.cli("user", "add", name, "--role", role, stdin=self.passwords[name] + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ecoin.dashboard.cli", "-c", str(self.config), *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"ecoin-dashboard {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def start(self) -> DashboardProcess:
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "ecoin.dashboard.cli", "-c", str(self.config), "serve"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()
        try:
            wait_for_port(self.port, timeout=30.0)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"the dashboard did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)

    def __enter__(self) -> DashboardProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Browser:
    """Headless Chromium driven over WebDriver (selenium + Debian's chromedriver): a real
    browser that runs the page's script, lays out its SVG and keeps its cookies."""

    def __init__(self, width: int = 1280, height: int = 1600) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver.quit()

    def login(self, base: str, user: str, password: str) -> None:
        from selenium.webdriver.common.by import By

        d = self.driver
        d.delete_all_cookies()
        d.get(base + "/login")
        d.find_element(By.ID, "user").send_keys(user)
        d.find_element(By.ID, "password").send_keys(password)
        d.find_element(By.ID, "login").click()
        self.wait(lambda: "/login" not in d.current_url or d.find_elements(By.ID, "message"))

    def wait(self, cond: Any, timeout: float = 15.0) -> Any:
        """Polls ``cond()`` until it is truthy (no fixed sleeps)."""
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"browser: condition not met in {timeout}s at {self.driver.current_url}")
            time.sleep(0.05)

    def status(self, url: str) -> int:
        """The HTTP status of a same-origin GET made by the page itself (its cookie too)."""
        script = "return fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.status);"
        return int(self.driver.execute_script(script, url))
