"""``make screenshot``: pictures of the dashboard from a demo run, for docs/ (the README
links them). A short demo (3 devices, 20 operations each) runs; with everything still up,
headless Chromium logs in as the owner and as the operator and saves each whole page.

    python -m ecoin.sim.screenshot --out docs      # docs/dashboard-owner.png, -operator.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ecoin.sim.demo import OPERATOR, OWNER, Demo
from ecoin.testing.dashboard import Browser

WIDTH = 1200


def shoot(browser: Browser, url: str, user: str, password: str, selector: str, out: Path) -> None:
    """Logs in, waits for the page's figures (a table row and a chart), saves the whole page."""
    from selenium.webdriver.common.by import By

    d = browser.driver
    browser.login(url, user, password)
    browser.wait(lambda: d.find_elements(By.CSS_SELECTOR, selector) and d.find_elements(By.TAG_NAME, "svg"))
    height = int(d.execute_script("return document.documentElement.scrollHeight"))
    d.set_window_size(WIDTH, height + 120)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not d.save_screenshot(str(out)):
        raise RuntimeError(f"chromium saved no screenshot to {out}")
    print(f"screenshot: {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ecoin.sim.screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs", help="folder of the pictures (default docs)")
    p.add_argument("--workdir", default="build/screenshot", help="the demo's folder (wiped first)")
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--ops", type=int, default=20)
    args = p.parse_args(argv)
    out, workdir = Path(args.out), Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    def pictures(demo: Demo) -> None:
        dash = demo.dashboard
        assert dash is not None
        with Browser(width=WIDTH) as browser:
            for user, rows in ((OWNER, "#devices tr[data-device]"), (OPERATOR, "#services tbody tr")):
                role = "owner" if user == OWNER else "operator"
                shoot(browser, dash.url, user, dash.passwords[user], rows, out / f"dashboard-{role}.png")

    Demo(workdir, args.devices, args.ops, "72K", "auto", quiet=True, after=pictures).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
