"""Screenshots of `animal-sync serve` for the docs: docs/serve-overview.png (mid-run) and docs/serve-animals.png.

A run of the bundled simulator (with chaos, so retries and an exception show) is followed by `serve` on 127.0.0.1
and photographed by Debian's headless Chromium through Selenium and /usr/bin/chromedriver. Where there is no
Chromium it says why and exits 0 without touching the pictures: `python scripts/screenshots.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
)


def main() -> int:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        print(f"screenshots skipped: {', '.join(missing)} not installed (apt-get install chromium chromium-driver)")
        return 0
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("screenshots skipped: selenium is not installed (pip install -e '.[dev]')")
        return 0

    from animal_sync.simulator import Simulator, SimulatorConfig
    from animal_sync.web import ServeConfig, listen, server

    work = Path(tempfile.mkdtemp(prefix="animal-sync-shots-"))
    os.chdir(work)  # the page names the journal as it was given: a short relative path, as a person types it
    journal = Path("nightly.db")
    config = SimulatorConfig(port=0, animals=3000, seed=7, chaos=3.0, stall_min=0.5, stall_max=1.5, faults={42: "bad_born_at"})
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={work / 'profile'}"):
        options.add_argument(flag)
    with Simulator(config) as sim:
        sock = listen("127.0.0.1", 0)
        web = server(ServeConfig((str(journal),)))
        thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        run = subprocess.Popen(
            [sys.executable, "-m", "animal_sync", "run", "--journal", str(journal), "--base-url", sim.url, "--quiet",
             "--workers", "2", "--post-workers", "1", "--batch-size", "50", "--get-timeout", "0.3"],
        )
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_window_size(1280, 1180)
            driver.get(url)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # mid-run: about half posted
                value = driver.find_element("id", "bar-posted").get_attribute("value")
                if float(value or 0) >= 1200:
                    break
                time.sleep(0.25)
            time.sleep(1.2)
            driver.save_screenshot(str(DOCS / "serve-overview.png"))
            run.wait(180)
            driver.get(url + "animals?q=ya")
            driver.set_window_size(1280, 900)
            driver.save_screenshot(str(DOCS / "serve-animals.png"))
        finally:
            driver.quit()
            if run.poll() is None:
                run.terminate()
                run.wait(30)
            web.should_exit = True
            thread.join(10)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {DOCS / 'serve-overview.png'} and {DOCS / 'serve-animals.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
