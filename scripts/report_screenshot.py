"""docs/report-example.png, retaken: a fresh run's HTML report as headless Chromium draws it.

`python scripts/report_screenshot.py` starts the bundled simulator (strict, 2 % chaos) with two hostile animals,
runs a full sync against it in a scratch directory, writes `report --html`, and has the OS's Chromium
(`apt-get install chromium` on Debian) take the picture. Where no Chromium is installed it writes nothing and
says why (exit 0: a machine without a browser is not an error; `--require` makes it exit 1).
Chromium runs with a fresh profile and no network of its own: the page loads nothing anyway.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from animal_sync.simulator import SimulatorProcess

__all__ = ["BROWSERS", "chromium", "main", "screenshot"]

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "report-example.png"
BROWSERS = ("chromium", "chromium-browser")  # Debian's and Ubuntu's names for the OS package
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)
WINDOW = "1200,1700"


def chromium() -> str | None:
    """The OS's Chromium, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, page: Path, target: Path, scratch: Path) -> None:
    """Draw `page` into the PNG `target`; a RuntimeError with Chromium's words if it made none."""
    target.unlink(missing_ok=True)
    done = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={scratch / 'profile'}", f"--window-size={WINDOW}",
         f"--screenshot={target}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if not target.exists() or target.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"{browser} made no screenshot (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "animal_sync", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=TARGET, help=f"the PNG to write (default {TARGET.relative_to(ROOT)})")
    parser.add_argument("--animals", type=int, help="animals in the simulator (default: its own, 5,000-6,000)")
    parser.add_argument("--require", action="store_true", help="exit 1, not 0, when there is no Chromium")
    args = parser.parse_args(argv)
    browser = chromium()
    if browser is None:
        print(f"skipped {args.output.name}: no headless Chromium on this machine ({' or '.join(BROWSERS)} not on PATH; "
              "on Debian: apt-get install chromium)", file=sys.stderr)
        return 1 if args.require else 0
    with tempfile.TemporaryDirectory(prefix="animal-sync-screenshot-") as name:
        scratch = Path(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANIMAL_SYNC_")}
        size = ["--animals", str(args.animals)] if args.animals else []
        with SimulatorProcess("--strict", "--fault", "7=bad_born_at", "--fault", "8=html", *size) as simulator:
            env["ANIMAL_SYNC_BASE_URL"] = simulator.url
            subprocess.run([sys.executable, "-m", "animal_sync", "run", "--quiet"], cwd=scratch, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)  # exit 1: 2 quarantined
        _cli("report", "--html", "report.html", cwd=scratch, env=env)
        screenshot(browser, scratch / "report.html", args.output, scratch)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
