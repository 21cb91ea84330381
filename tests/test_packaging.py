"""The installed wheel, not only the checkout, carries the journal's schema history and applies it, and the simulator package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_migrations_and_an_installed_copy_applies_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )
    [wheel] = tmp_path.glob("animal_sync-*.whl")
    shipped = sorted(name for name in zipfile.ZipFile(wheel).namelist() if "/migrations/" in name)
    assert shipped == [f"animal_sync/migrations/{path.name}" for path in sorted((ROOT / "migrations").glob("*.py"))]
    simulator = sorted(name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("animal_sync/simulator/"))
    assert simulator == [f"animal_sync/simulator/{path.name}" for path in sorted((ROOT / "src/animal_sync/simulator").glob("*.py"))]
    assert "animal_sync/docs.py" not in zipfile.ZipFile(wheel).namelist()  # the docs generator is a repository tool

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import animal_sync.journal as j;"
        "assert j.__file__.startswith(sys.argv[1]), j.__file__;"
        "journal = j.Journal.open(sys.argv[2]); print(sorted(journal.db.table_names())); journal.close();"
        "from animal_sync.simulator import Simulator; assert Simulator.__module__ == 'animal_sync.simulator.server'"
    )
    # No checkout beside it (tmp_path holds no migrations/): the journal opens only if the wheel's own copy is found.
    done = subprocess.run(
        [sys.executable, "-c", probe, str(installed), str(tmp_path / "j.db")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "'animals'" in done.stdout and "'_sqlite_migrations'" in done.stdout
